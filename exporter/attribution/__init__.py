"""Attribution: the evidence for each cancellation source, and the classifier that weighs it.

`signals.py` keeps cancel signals, `bulk.py` the polled bulk cancellation list,
`expressions.py` evaluates Inngest's CEL; `classify.py` decides a run's source from
them, and `pending.py` holds runs while evidence that could change the answer may
still arrive. The pipeline calls in here between dedupe and the sinks.
"""
