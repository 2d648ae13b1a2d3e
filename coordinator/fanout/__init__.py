"""The host streams' fan-out: one etcd watch per replica feeds an in-memory cache of the desired state
(`state`, `history`), from which every host stream is served (`hub`, `views`, `subscription`)."""
