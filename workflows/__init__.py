"""pydra workflows chaining the tasks of ``rdmm_pipelines.interfaces`` into pair and cohort DAGs,
installed as ``rdmm_pipelines.workflows``. The workflows arrive with the cohort issue (see the
README's roadmap)."""
