"""The play-along domain shared by the core, worker and scheduler roles.

Written once over the broker and store interfaces, so it runs the same on the embedded default and in a
cluster. Who does what:

* core (request path): ``director`` actions (state machine, messages), ``answers`` (validation, dedupe and
  enqueue in one broker round trip per batch), reads (``results``, ``leaderboard``, ``profile``,
  ``friends``, ``notifications``) through the instance-local ``cache``.
* worker (off the request path): aggregation of answers into per-choice sets, ``scorer`` at reveal,
  ``achievements``, friend notifications.
* scheduler: ``director.close_due_interactions`` at each interaction's deadline.

The store is the source of truth (answers, scores, achievements, users, shows); what lives in Redis
(answer sets, leaderboards, throttles) is rebuilt from it when missing, or is best effort.
"""
