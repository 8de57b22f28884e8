"""zhgpt orchestration: config, dataset contract, runner, lineage, Ray setup, CLI."""
