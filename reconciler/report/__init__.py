"""Renderers of a Plan: text for terminals, markdown for pull-request comments, JSON for machines.

Each renders the Plan it is given unchanged and deterministically, so the three always
agree; none of them computes, re-sorts or filters anything the plan layer decided.
"""

from reconciler.report.markdown import render_markdown
from reconciler.report.plan_json import plan_from_dict, plan_to_dict, render_json
from reconciler.report.text import plan_text, render_text

__all__ = ["plan_from_dict", "plan_text", "plan_to_dict", "render_json", "render_markdown", "render_text"]
