"""The SQL of the Postgres store, one statement per constant, a module per concern.

Where a statement lives: the statements of the store's core, by concern, are here;
the modules beside this package build their parameters, run them and read their rows.
Features built on that core keep their statements in their own modules: flow control
(``_flow_*``) and the operator's queries and actions (``_ops_*``). The modules here
import each other only, never the store's code (an import-linter contract):

- ``common``: ``compact``, the clock (``NOW``), status sets, the lease fence (``HELD``),
  plan settings, advisory locks and notifications: what every statement uses;
- ``attempts``: recording attempt history and step timings;
- ``claiming``: the claim (``CLAIM``) and what follows it for runs that resume;
- ``committing``: the batch commit (``COMMIT_BATCH``) and one run's commit on the full
  path (steps, retries, suspensions);
- ``sending``: logging events, starting runs, and the cancels and wakes events cause;
- ``finishing``: finishing runs and resolving pending steps (cancels, invoked runs);
- ``ticking``: the tick function, a PL/pgSQL function made of the statements above (the
  batch commit, the claim), called once per tick, and its follow-up function (what the
  claimed runs call for), which the claim of gated runs (``_claim``) calls too;
- ``leases``, ``reading``, ``schedules``, ``retention``: as named.

Conventions that hold for every statement:

- Names are unqualified; connections run with ``search_path`` set to the store's schema.
- ``NOW`` is the store's clock: a test's virtual time when one is given, else the
  database's ``now()``, so that a drifting application clock never decides what is due.
- Every name, field and value is a bound parameter; JSON paths are ``data -> %(field)s``.
- User values (run data and results, step outputs, errors, event data, pending specs)
  are stored as ``json``: the text msgspec wrote, byte for byte, so a replay sees exactly
  what the first run saw (``jsonb`` would re-sort keys and rewrite numbers). They go in
  as ``%(x)s::json`` and are never cast to ``jsonb`` on their way in or out.
- A rule or wait on a field matches an event whose data has the field with an equal JSON
  value; data without the field matches nothing, whatever the value. Matching compares
  ``jsonb`` (``cancel_rules.value``, ``pending.match_value``, the event's fields cast).
- Statements that change a run whose lease the caller claims to hold carry the lease in
  their WHERE clause (``HELD``), so a commit whose lease was lost changes nothing even
  though its statements were already pipelined.
- Rows that other transactions may change are locked by one statement and read by a
  later one, never by the same: under READ COMMITTED each statement takes a fresh
  snapshot, but a statement's own snapshot predates the locks it waits for.
"""
