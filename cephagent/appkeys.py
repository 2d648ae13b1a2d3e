"""Typed aiohttp application state of the cephagent, in one place."""

from __future__ import annotations

from aiohttp import web

from agentkit.metrics import Registry
from cephagent.cluster import CephCluster
from cephagent.images import Images
from cephagent.settings import CephAgentSettings
from cephagent.tasks import Tasks
from cephagent.volumes import Volumes
from cephagent.workers import Workers

SETTINGS = web.AppKey("settings", CephAgentSettings)
CLUSTER = web.AppKey("cluster", CephCluster)
VOLUMES = web.AppKey("volumes", Volumes)
IMAGES = web.AppKey("images", Images)
TASKS = web.AppKey("tasks", Tasks)
WORKERS = web.AppKey("workers", Workers)
METRICS = web.AppKey("metrics", Registry)  # /metrics: the requests, the workers, tasks and imports
