"""The subprocessors service's answers to rights requests: its erasure report and its part of
access exports (the recipients to whom the subject's data were disclosed, GDPR Art. 15(1)(c))."""
