-- Where the slayq server delivers a run: the receiver URL of the client that sent it.
alter table runs add column endpoint text;
