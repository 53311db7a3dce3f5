"""Developer tools: generators for the README command reference and the deploy/ artefacts."""
