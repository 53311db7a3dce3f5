"""Developer tools: generators for the command reference (docs/reference.md) and the deploy/ artefacts."""
