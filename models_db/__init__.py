"""The studio's database: typed SQLAlchemy 2.0 schema, engine/session factory, queries, migrations."""
from models_db.engine import get_engine, session_scope, reset_engine
from models_db import access  # noqa: F401 - registers the owner filter on every Session
from models_db.schema import (
    Base, BaseModel, BenchmarkPin, Dataset, Evaluation, Generation, GenerationState, Job, JobState, Metric, ModelVersion, Sweep,
    User, VersionParent, Worker,
)

__all__ = [
    "Base", "BaseModel", "BenchmarkPin", "Dataset", "Evaluation", "Generation", "GenerationState", "Job", "JobState", "Metric",
    "ModelVersion", "Sweep", "User", "VersionParent", "Worker",
    "get_engine", "session_scope", "reset_engine",
]
