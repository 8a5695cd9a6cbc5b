"""Policy (notice) versions: publication with the 30-working-day rule, activation, re-consent."""
