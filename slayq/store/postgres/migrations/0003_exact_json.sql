-- User values are kept as the text slayq wrote, byte for byte: jsonb re-sorts object keys
-- and rewrites numbers (1e22 as an integer, -0.0 as 0), and a function that iterates a
-- step's dict would meet its keys in another order on replay. json keeps the text as
-- given (checked valid) and json_build_object/json_agg embed it verbatim.
-- jsonb stays where SQL compares values for equality: pending.match_value and
-- cancel_rules.value, matched by their indexes.
alter table runs
    alter column data type json using data::json,
    alter column result type json using result::json,
    alter column error type json using error::json;

alter table steps
    alter column output type json using output::json,
    alter column error type json using error::json;

alter table pending alter column spec type json using spec::json;

alter table events alter column data type json using data::json;

alter table schedules alter column template type json using template::json;
