"""Real-time sensing (实时感知): sensor readings posted over HTTP, graded warnings from thresholds."""
