"""The preference store shared by the annotation app, the command line and the GRM pipelines.

`rlhfv.store.store.Store` holds users, tasks, assignments and labels (SQLAlchemy; SQLite by
default, PostgreSQL by URL); `ingest` brings tasks in, `export` writes training snapshots,
`agreement` scores the annotators, `cli` is `rlhfv annotate`.
"""
