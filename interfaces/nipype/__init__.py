"""nipype 1.x interfaces calling the rdmm_pipelines library: ``RdmmRegister``, ``RdmmApply`` and
``RdmmEvaluate`` (``nipype.interfaces.base.BaseInterface`` subclasses, usable in nipype Nodes and
Workflows with any plugin: Linear, MultiProc, SLURM).

They run the same stage functions as the pydra tasks of :mod:`rdmm_pipelines.interfaces`, write
their outputs into the node's working directory under per-subject names, and follow nipype's
convention for failures: an error raises, and nipype writes a crash file (unlike the pydra tasks,
which report ``status="failed"``). nipype's SLURM plugin needs ``LOGNAME`` in the environment.

Example::

    from nipype import Node, Workflow
    from rdmm_pipelines.interfaces.nipype import RdmmRegister, RdmmEvaluate

    reg = Node(RdmmRegister(model="rdmm", regularizer="optimized"), name="register")
    ev = Node(RdmmEvaluate(method="rdmm"), name="evaluate")
    wf = Workflow(name="pair", base_dir="work")
    wf.connect(reg, "displacement", ev, "displacement")
    ...
    wf.run(plugin="MultiProc", plugin_args={"n_procs": 2})
"""

try:
    import nipype  # noqa: F401
except ImportError as err:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "rdmm_pipelines.interfaces.nipype needs nipype 1.x: pip install 'rdmm_pipelines[nipype]'"
    ) from err

from .interfaces import RdmmApply, RdmmEvaluate, RdmmRegister

__all__ = ["RdmmApply", "RdmmEvaluate", "RdmmRegister"]
