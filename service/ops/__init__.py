"""Job queues for ops: statistics, listings, a job's detail, retry and abort.

``commands`` and ``handlers`` change a job row (retry, abort) through the message bus; ``actions``
brings Redis in line once the change is committed (``adapters.arq_jobs``); ``views`` reads.

arq keeps a failed job only until its result expires and has no listing, retry or dead-letter
view, so all of this stands on the jobs table, the durable record of every job. Redis is then
brought in line with the row:

- The row decides. A job runs only if its row can be claimed (queued, in progress or failed), so
  an aborted row is never run, whatever arq still holds.
- Retry puts a failed or dead row back to work. arq refuses a job id while it keeps the job or
  its result, so the old result (and any stale abort mark) is removed before the id is enqueued
  again; the reconciler enqueues the row later if Redis cannot take it now.
- Abort never calls ``arq.jobs.Job.abort``: on an id that is not running, arq keeps the mark and
  aborts the *next* job with that id (a retry of this one). A queued job is taken out of arq's
  queue instead; only a job that a worker is running right now gets arq's abort mark, and a
  retry clears any mark left behind.

Every retry and abort is recorded in Directory Insights (``job_retry``, ``job_abort``) with the
acting admin, in the same transaction as the row's change; a refused one is recorded with
``success: false``.
"""
