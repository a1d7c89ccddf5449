"""SQLAlchemy models of the metadata store. Every tenant-owned row carries its ``appkey``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from chalicelib.domain.common import utc_now


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: DateTime()}


class Project(Base):
    """An appkey: the tenant every resource belongs to."""

    __tablename__ = "projects"

    appkey: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class AccessToken(Base):
    """A bearer token of one project; only its SHA-256 digest is stored."""

    __tablename__ = "access_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    appkey: Mapped[str] = mapped_column(ForeignKey("projects.appkey", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class StatusMixin:
    status: Mapped[str] = mapped_column(String(64))
    status_reason: Mapped[str | None] = mapped_column(Text, default=None)
    version: Mapped[int] = mapped_column(Integer, default=1)


class Experiment(StatusMixin, Base):
    __tablename__ = "experiments"
    __table_args__ = (UniqueConstraint("appkey", "name", name="uq_experiments_appkey_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    appkey: Mapped[str] = mapped_column(ForeignKey("projects.appkey", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(String(255), default=None)
    tags: Mapped[list[Any]] = mapped_column(default=list)
    parent_pipeline_run_id: Mapped[str | None] = mapped_column(String(36), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now)


class TrainingTemplate(Base):
    __tablename__ = "training_templates"
    __table_args__ = (
        UniqueConstraint("appkey", "name", name="uq_training_templates_appkey_name"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    appkey: Mapped[str] = mapped_column(ForeignKey("projects.appkey", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(String(255), default=None)
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    tags: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now)


class IdempotencyRecord(Base):
    """The first response to a create carrying ``X-Idempotency-Key``, replayed on retries."""

    __tablename__ = "idempotency_records"
    __table_args__ = (Index("ix_idempotency_records_created_at", "created_at"),)

    appkey: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response_body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class Training(StatusMixin, Base):
    """A training: its specification, where it is in its lifecycle, and when it ran.

    The Ray submission id of its job is the training id, so a repeated dispatch can never
    start a second job. ``experiment_id`` restricts deletion of the experiment.
    """

    __tablename__ = "trainings"
    __table_args__ = (
        Index("ix_trainings_appkey_created_at", "appkey", "created_at"),
        Index("ix_trainings_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    appkey: Mapped[str] = mapped_column(ForeignKey("projects.appkey", ondelete="CASCADE"))
    experiment_id: Mapped[str] = mapped_column(
        ForeignKey("experiments.id", ondelete="RESTRICT"), index=True
    )
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(String(255), default=None)
    kind: Mapped[str] = mapped_column(String(16), default="NORMAL")
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    tags: Mapped[list[Any]] = mapped_column(default=list)
    parent_pipeline_run_id: Mapped[str | None] = mapped_column(String(36), default=None)
    dispatched_at: Mapped[datetime | None] = mapped_column(default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    ended_at: Mapped[datetime | None] = mapped_column(default=None)
    # NSML's zombie rule: set while the job holds GPUs that stayed at 0 % for an hour.
    zombie_since: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now)


class JobMetric(Base):
    """One monitoring sample of one node of a job (CPU, memory, GPU), for charts and for the
    zombie rule (GPUs held at 0 % for an hour)."""

    __tablename__ = "job_metrics"
    __table_args__ = (Index("ix_job_metrics_resource_time", "resource_id", "sampled_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    resource_id: Mapped[str] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(32))
    node: Mapped[str] = mapped_column(String(32))
    sampled_at: Mapped[datetime] = mapped_column()
    cpu_percent: Mapped[float] = mapped_column(default=0.0)
    memory_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    gpu_percent: Mapped[float | None] = mapped_column(default=None)
    gpu_memory_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)


class HyperparameterTuning(StatusMixin, Base):
    """A tuning: its specification (with the search), lifecycle and the study it drives.

    Its Ray submission id and its Optuna study name are the tuning id.
    """

    __tablename__ = "hyperparameter_tunings"
    __table_args__ = (
        Index("ix_hyperparameter_tunings_appkey_created_at", "appkey", "created_at"),
        Index("ix_hyperparameter_tunings_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    appkey: Mapped[str] = mapped_column(ForeignKey("projects.appkey", ondelete="CASCADE"))
    experiment_id: Mapped[str] = mapped_column(
        ForeignKey("experiments.id", ondelete="RESTRICT"), index=True
    )
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(String(255), default=None)
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    tags: Mapped[list[Any]] = mapped_column(default=list)
    status_detail: Mapped[str | None] = mapped_column(String(32), default=None)
    parent_pipeline_run_id: Mapped[str | None] = mapped_column(String(36), default=None)
    dispatched_at: Mapped[datetime | None] = mapped_column(default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    ended_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now)


class Trial(Base):
    """One trial of a tuning: the suggested hyperparameters, its status, its metrics."""

    __tablename__ = "tuning_trials"
    __table_args__ = (
        UniqueConstraint("tuning_id", "number", name="uq_tuning_trials_tuning_number"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tuning_id: Mapped[str] = mapped_column(
        ForeignKey("hyperparameter_tunings.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32))
    status_reason: Mapped[str | None] = mapped_column(Text, default=None)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    objective_value: Mapped[float | None] = mapped_column(default=None)
    version: Mapped[int] = mapped_column(Integer, default=1)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    ended_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now)


class Model(StatusMixin, Base):
    """A model: an artifact (a storage URI) with its framework and serving parameters, made
    from a URI or from a COMPLETE training or tuning (the best trial's model folder)."""

    __tablename__ = "models"
    __table_args__ = (
        UniqueConstraint("appkey", "name", name="uq_models_appkey_name"),
        Index("ix_models_appkey_created_at", "appkey", "created_at"),
        Index("ix_models_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    appkey: Mapped[str] = mapped_column(ForeignKey("projects.appkey", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(String(255), default=None)
    format_code: Mapped[str] = mapped_column(String(32))
    framework_version: Mapped[str | None] = mapped_column(String(64), default=None)
    upload_uri: Mapped[str] = mapped_column(Text)
    training_id: Mapped[str | None] = mapped_column(
        ForeignKey("trainings.id", ondelete="RESTRICT"), index=True, default=None
    )
    tuning_id: Mapped[str | None] = mapped_column(
        ForeignKey("hyperparameter_tunings.id", ondelete="RESTRICT"), index=True, default=None
    )
    trial_number: Mapped[int | None] = mapped_column(Integer, default=None)
    parameters: Mapped[list[Any]] = mapped_column(default=list)
    tags: Mapped[list[Any]] = mapped_column(default=list)
    parent_pipeline_run_id: Mapped[str | None] = mapped_column(String(36), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now)


class Endpoint(StatusMixin, Base):
    """An endpoint: a name and its stages (one of them the default)."""

    __tablename__ = "endpoints"
    __table_args__ = (
        UniqueConstraint("appkey", "name", name="uq_endpoints_appkey_name"),
        Index("ix_endpoints_appkey_created_at", "appkey", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    appkey: Mapped[str] = mapped_column(ForeignKey("projects.appkey", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(String(255), default=None)
    parent_pipeline_run_id: Mapped[str | None] = mapped_column(String(36), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now)


class EndpointStage(StatusMixin, Base):
    """A stage of an endpoint: its flavor and nodes, its gateway key (the first path segment
    of its URL) and its models' pods, deployed by one Ray job per deployment."""

    __tablename__ = "endpoint_stages"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "name", name="uq_endpoint_stages_endpoint_name"),
        Index("ix_endpoint_stages_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    appkey: Mapped[str] = mapped_column(ForeignKey("projects.appkey", ondelete="CASCADE"))
    endpoint_id: Mapped[str] = mapped_column(
        ForeignKey("endpoints.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(64))
    is_default: Mapped[bool] = mapped_column(default=False)
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    deploy_status: Mapped[str] = mapped_column(String(32), default="CREATE_IN_PROGRESS")
    dispatched_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now)


class EndpointStageStat(Base):
    """A stage's API calls in one minute, as the gateway counted them: calls, answers by
    class and latency bucket counts (``serving.gateway.stats.BOUNDS_MS``), for the stage's
    API statistics and the dashboard."""

    __tablename__ = "endpoint_stage_stats"
    __table_args__ = (Index("ix_endpoint_stage_stats_appkey_minute", "appkey", "minute"),)

    stage_id: Mapped[str] = mapped_column(
        ForeignKey("endpoint_stages.id", ondelete="CASCADE"), primary_key=True
    )
    minute: Mapped[datetime] = mapped_column(primary_key=True)
    appkey: Mapped[str] = mapped_column(ForeignKey("projects.appkey", ondelete="CASCADE"))
    endpoint_id: Mapped[str] = mapped_column(String(36))
    calls: Mapped[int] = mapped_column(default=0)
    status_2xx: Mapped[int] = mapped_column(default=0)
    status_4xx: Mapped[int] = mapped_column(default=0)
    status_5xx: Mapped[int] = mapped_column(default=0)
    latency_buckets: Mapped[list[Any]] = mapped_column(default=list)


class EndpointModel(Base):
    """A stage resource: one model on one stage, with its pods' resources and addresses."""

    __tablename__ = "endpoint_models"
    __table_args__ = (
        UniqueConstraint("stage_id", "model_id", name="uq_endpoint_models_stage_model"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    appkey: Mapped[str] = mapped_column(ForeignKey("projects.appkey", ondelete="CASCADE"))
    endpoint_id: Mapped[str] = mapped_column(String(36), index=True)
    stage_id: Mapped[str] = mapped_column(
        ForeignKey("endpoint_stages.id", ondelete="CASCADE"), index=True
    )
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="RESTRICT"), index=True)
    status: Mapped[str] = mapped_column(String(32))
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    pods: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now)
