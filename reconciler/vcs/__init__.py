"""The forges: GitHub and GitLab pull requests, comments, statuses and drift pull requests."""
