"""Applying plans: the executor, its budgets and its blast-radius guard."""
