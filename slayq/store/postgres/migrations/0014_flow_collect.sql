-- Debounce and batch (store/postgres/_flow_debounce.py, _flow_batch.py): a sent event
-- looks up its bucket's newest debounce or batch run, by the bucket its client stored in
-- runs.flow (0011). Partial: only runs of such functions have an entry, so other runs'
-- inserts only test the predicate; no update changes flow or seq, so updates that were
-- HOT stay HOT.
create index runs_flow_debounce on runs ((flow -> 'debounce' ->> 'bucket'), seq)
    where (flow -> 'debounce' ->> 'bucket') is not null;
create index runs_flow_batch on runs ((flow -> 'batch' ->> 'bucket'), seq)
    where (flow -> 'batch' ->> 'bucket') is not null;
