"""Action use cases: load, apply the rules, record history and events, commit once.

Each use case opens one unit of work and commits once (a dry run leaves without
committing, so nothing is kept). They live in rooms by what they do:
`plans` (a plan file's import, a plan's start and title), `tracking` (a lead's
changes, dated updates and links, and the tracking import), `reading` (one action,
the list, the export, a plan as it stood), `progress` (the public page's figures).
`repository` does the SQL behind `uow.actions`; `announcements` says what the
events carry. This module names them all, for api.py, app.py and the command line.
"""

from __future__ import annotations

from services.actions.announcements import publish_state_page
from services.actions.plans import ImportRejected, Progress, change_plan, get_plan, import_plan, list_plans
from services.actions.progress import plan_progress
from services.actions.reading import ActionFilters, export_actions, get_action, list_actions, plan_snapshot
from services.actions.spreadsheet import PlanUpload
from services.actions.tracking import (
    TrackingRejected,
    change_action,
    import_tracking,
    link_actions,
    record_update,
    unlink_actions,
)

__all__ = [
    "ActionFilters",
    "ImportRejected",
    "PlanUpload",
    "Progress",
    "TrackingRejected",
    "change_action",
    "change_plan",
    "export_actions",
    "get_action",
    "get_plan",
    "import_plan",
    "import_tracking",
    "link_actions",
    "list_actions",
    "list_plans",
    "plan_progress",
    "plan_snapshot",
    "publish_state_page",
    "record_update",
    "unlink_actions",
]
