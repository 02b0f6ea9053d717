"""pydra tasks and nipype interfaces for rdmm_pipelines, installed as ``rdmm_pipelines.interfaces``.

This layer wraps the library (``rdmm_pipelines``) for workflow engines; the library never imports it.
The tasks themselves arrive with the interfaces issue (see the README's roadmap).
"""
