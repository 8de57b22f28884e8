"""Rank 0's per-step metrics for MLflow, sent from a background thread (the config's `log_every`: flush interval).

    log = MetricLog(tracking_uri, run_id, every=10)   # opens the MLflow store now, before step 1
    log.add(step, {"loss": 4.2, "lr": 3e-3})          # buffered; every `every` steps handed to the sender thread
    log.flush()                                       # before a checkpoint: MLflow has everything up to here
    log.close()
"""
from __future__ import annotations

import math
import queue
import threading
import time


class MetricLog:
    """Rank 0's per-step metrics for MLflow: buffered, and every `every` steps handed to a background thread that
    sends them with MlflowClient.log_batch, so no SQLite or HTTP write sits between two training steps.
    flush() sends the rest and waits until MLflow has it (before each checkpoint and at the end); a logging error
    surfaces there. The client is made here, before training: importing MLflow and opening its store is seconds
    of pure-Python work, and in a thread beside the training loop it would hold the GIL that every torch op
    dispatch needs (measured: 6x slower steps while it ran)."""

    def __init__(self, uri: str, run_id: str | None, every: int):
        self.uri, self.run_id, self.every, self.buf = uri, run_id, max(1, every), []
        self.queue: queue.Queue | None = None
        self.error: Exception | None = None
        self.client = None
        if uri and run_id:
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(tracking_uri=uri)
            self.client.get_run(run_id)  # opens the store now; a wrong run id fails here, not mid-run

    def add(self, step: int, metrics: dict[str, float]) -> None:
        if self.client is None:
            return
        now = int(time.time() * 1000)
        self.buf += [(k, float(v), now, step) for k, v in sorted(metrics.items()) if math.isfinite(v)]
        if step % self.every == 0:
            self._send()

    def _send(self) -> None:
        if not self.buf:
            return
        if self.queue is None:
            self.queue = queue.Queue()
            threading.Thread(target=self._sender, name="mlflow-metrics", daemon=True).start()
        self.queue.put(self.buf)
        self.buf = []

    def _sender(self) -> None:
        from mlflow.entities import Metric

        client, q = self.client, self.queue
        while (batch := q.get()) is not None:
            try:
                metrics = [Metric(*m) for m in batch]
                for i in range(0, len(metrics), 1000):  # MLflow caps a batch at 1000 metrics
                    client.log_batch(self.run_id, metrics=metrics[i:i + 1000])
            except Exception as exc:  # noqa: BLE001 - raised again by flush(), on the training thread
                self.error = exc
            finally:
                q.task_done()

    def flush(self) -> None:
        self._send()
        if self.queue is not None:
            self.queue.join()
        if self.error is not None:
            err, self.error = self.error, None
            raise RuntimeError(f"logging metrics to MLflow failed: {err}") from err

    def close(self) -> None:
        self.flush()
        if self.queue is not None:
            self.queue.put(None)
            self.queue = None
