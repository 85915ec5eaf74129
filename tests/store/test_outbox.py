"""The JobStore contract, run against every backend: the callback outbox."""

from __future__ import annotations

from tests.store.kit import BASE, claim, complete, fail, progress, states, submit
from voxtrace.store.base import JobStore

# ------------------------------------------------------------------------ outbox


def test_due_callbacks_hands_out_one_callback_per_job_in_order(store: JobStore) -> None:
    submit(store, "a", "b")
    a, attempt_a = claim(store, "w1")
    b, attempt_b = claim(store, "w2")
    progress(store, a, attempt_a, 10, now=11.0)
    progress(store, b, attempt_b, 10, worker="w2", now=12.0)
    heads = store.due_callbacks(now=20.0, limit=10)
    assert [(h.job_id, h.seq) for h in heads] == [(a, 1), (b, 1)]
    assert store.due_callbacks(now=20.0, limit=1) == heads[:1]
    assert store.due_callbacks(now=11.5, limit=10) == heads[:1]  # b's not due yet

    # a's progress is in flight when a finishes: the terminal waits its turn...
    complete(store, a, attempt_a, now=21.0)
    store.mark_delivered(heads[0].id, now=22.0)
    # ...and the one in flight is recorded as delivered, because it was.
    assert states(store, a) == [("processing", "delivered"), ("completed", "pending")]
    due = {h.job_id: h for h in store.due_callbacks(now=30.0, limit=10)}
    assert (due[a].seq, due[a].terminal, due[a].base_url) == (2, True, BASE)
    store.mark_delivered(due[a].id, now=31.0)
    assert [h.job_id for h in store.due_callbacks(now=40.0, limit=10)] == [b]


def test_delivery_bookkeeping(store: JobStore) -> None:
    submit(store, "a")
    job_id, attempt = claim(store)
    fail(store, job_id, attempt, now=20.0)
    (item,) = store.due_callbacks(now=20.0, limit=10)
    assert (item.attempts, item.created_at, item.next_attempt_at) == (0, 20.0, 20.0)

    store.schedule_retry(item.id, next_attempt_at=25.0, error="HTTP 500", now=21.0)
    assert store.due_callbacks(now=24.0, limit=10) == []
    (again,) = store.due_callbacks(now=25.0, limit=10)
    assert (again.id, again.attempts) == (item.id, 1)
    store.mark_dead(item.id, "HTTP 404", now=26.0)
    assert store.due_callbacks(now=100.0, limit=10) == []
    (entry,) = store.callback_log(job_id)
    assert entry["seq"] == 1
    assert (entry["status"], entry["state"], entry["attempts"]) == ("failed", "dead", 2)
    assert (entry["last_error"], entry["created_at"], entry["delivered_at"]) == (
        "HTTP 404",
        20.0,
        None,
    )
    store.mark_delivered(item.id, now=27.0)  # too late: a dead callback stays dead
    assert store.callback_log(job_id)[0]["state"] == "dead"
    assert store.stats().callbacks_pending == 0


def test_a_delivered_callback_is_logged_with_its_time(store: JobStore) -> None:
    submit(store, "a")
    job_id, attempt = claim(store)
    complete(store, job_id, attempt, now=20.0)
    (item,) = store.due_callbacks(now=20.0, limit=10)
    store.mark_delivered(item.id, now=21.5)
    (entry,) = store.callback_log(job_id)
    assert (entry["state"], entry["attempts"], entry["delivered_at"]) == ("delivered", 1, 21.5)
    assert entry["progress"] == 100
