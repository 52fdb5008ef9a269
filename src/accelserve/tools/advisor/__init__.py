"""``accelserve advise``: choose a model's device and batching config by measurement (the
command in ``advise``, the search space in ``candidates``, the output in ``report``)."""
