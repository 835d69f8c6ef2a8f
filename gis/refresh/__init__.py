"""Refresh jobs: read → normalise → validate → stage → merge, in one transaction, keeping history."""
