"""Signatures of classes that forward ``**kwargs`` to an ESPnet parent."""

import inspect


def extend_signature(cls, parent_init) -> None:
    """Advertise ``cls(...)``'s signature as its own keyword arguments plus those of
    ``parent_init`` it forwards through ``**kwargs``, so that ESPnet's
    ``--print_config`` lists every option with its default."""
    own = [
        p for p in inspect.signature(cls.__init__).parameters.values()
        if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    names = {p.name for p in own}
    inherited = [
        p.replace(kind=p.KEYWORD_ONLY) if p.kind == p.VAR_POSITIONAL else p
        for p in inspect.signature(parent_init).parameters.values()
        if p.name != "self" and p.name not in names and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    params = [p for p in own if p.default is p.empty] + [
        p.replace(kind=p.KEYWORD_ONLY) for p in inherited + [p for p in own if p.default is not p.empty]
    ]
    cls.__signature__ = inspect.Signature(params)
