"""The progress display of ``rdmm register``: a tqdm bar on stderr driven by
:class:`~rdmm_pipelines.progress.RegistrationProgress`."""

from __future__ import annotations

import sys

__all__ = ["progress_bar"]


def progress_bar(enabled: bool, desc: str, advice=None):
    """A :class:`~rdmm_pipelines.progress.RegistrationProgress` for ``register`` and the function
    that closes its display.

    With ``enabled``, a tqdm bar on stderr shows the stage (affine level or deformable scale), the
    percent of the weighted work done and the time left; it is created at the first iteration, so
    nothing is drawn before ``register`` has checked its inputs. Enabled or not, a run estimated
    long is announced on stderr before it starts, with the options that shorten it
    (``advice(estimate)``, when given, writes that line instead of the estimate's own: a
    network's refinement is shortened by other options).
    """
    import time

    from .progress import RegistrationProgress, format_duration

    def long_run(estimate) -> None:
        line = estimate.message(cli=True) if advice is None else advice(estimate)
        print(f"rdmm register: note: {line}", file=sys.stderr, flush=True)

    if not enabled:
        return RegistrationProgress(on_long_run=long_run), lambda: None
    from tqdm import tqdm

    shown: dict = {"bar": None, "drawn": -1.0, "stage": None}

    def draw(state) -> None:
        bar, now = shown["bar"], time.monotonic()
        if bar is not None and state.stage_index == shown["stage"] and not state.finished and now - shown["drawn"] < 0.2:
            return  # at most five redraws a second (affine iterations of a slice take milliseconds)
        record = state.record
        loss = "" if record is None else f", {'loss' if state.stage.kind == 'affine' else 'energy'} {record.total:.4g}"
        left = "" if state.remaining is None else f", about {format_duration(state.remaining)} left"
        text = (f"it {state.stage_iteration}/{state.stage.iterations}{loss}, "
                f"{format_duration(state.elapsed)} elapsed{left}")
        form = "{desc}: {percentage:3.0f}%|{bar}| " + text.replace("{", "{{").replace("}", "}}")
        label, done = f"{desc} {state.stage.label}", round(100 * state.fraction, 2)
        if bar is None:  # the first iteration: the inputs are checked
            shown["bar"] = tqdm(total=100, initial=done, desc=label, bar_format=form, file=sys.stderr, leave=False,
                                dynamic_ncols=True)
        else:
            bar.bar_format = form
            bar.set_description_str(label, refresh=False)
            bar.n = done
            bar.refresh()
        shown["drawn"], shown["stage"] = now, state.stage_index

    def close() -> None:
        if shown["bar"] is not None:
            shown["bar"].close()

    return RegistrationProgress(on_update=draw, on_long_run=long_run), close
