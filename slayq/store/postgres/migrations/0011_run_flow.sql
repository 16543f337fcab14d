-- A run's flow controls (model.Flow: concurrency, throttle, rate limit, debounce, batch,
-- singleton, idempotency buckets), as the client resolved them when it created the run.
-- Null for runs of functions without any, which is nearly all: a nullable column without
-- a default is added without rewriting the table. Features derive what they index from it.
alter table runs add column flow json;
