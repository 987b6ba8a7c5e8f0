"""One module per pipeline stage: the plain function plus its Prefect task."""
