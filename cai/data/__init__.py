"""Data layer: prompt sources in, durable record logs while running, Hub-layout datasets out."""
