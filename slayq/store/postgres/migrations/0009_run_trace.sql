-- The W3C trace context (traceparent, tracestate) of the code that sent a run's event,
-- handed to each attempt so its spans continue that trace. Null without OpenTelemetry;
-- a nullable column without a default is added without rewriting the table.
alter table runs add column trace json;
