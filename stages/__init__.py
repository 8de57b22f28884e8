"""zhgpt stages: one sub-package per stage, each exposing SPEC (a pipelines.stage.StageSpec)."""
