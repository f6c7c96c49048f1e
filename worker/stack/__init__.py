"""The embedded stack: Redis, workers, Flower and the scheduler on one machine (embedded:
Stack), kept alive by `digits up` (supervise, answering), and how a command finds a broker
(broker: the configured one, a running `digits up`, or a stack started for the command)."""
