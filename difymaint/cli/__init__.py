"""The thin CLI layer: parse flags, build the context, call the job, render the result."""
