"""This service's copy of consent state, kept from the consent topic (never the consent DB)."""
