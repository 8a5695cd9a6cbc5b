"""Checks for product code: may we use this subject's data for this purpose now?"""
