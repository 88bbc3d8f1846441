"""Random state of tfmbs devices: one CPU-algorithm generator per device, so a
seeded tfmbs generator gives the numbers a seeded CPU generator gives."""
from . import _C
from ._device_index import index as _index

_generators = {}


def default_generators():
    for i in range(_C.device_count()):
        if i not in _generators:
            _generators[i] = _C.default_generator(i)
    return tuple(_generators[i] for i in range(_C.device_count()))


def _generator(device=None):
    return default_generators()[_index(device)]


def manual_seed(seed):
    _generator().manual_seed(int(seed))


def manual_seed_all(seed):
    for g in default_generators():
        g.manual_seed(int(seed))


def seed():
    _generator().seed()


def seed_all():
    for g in default_generators():
        g.seed()


def initial_seed():
    return _generator().initial_seed()


def get_rng_state(device="tfmbs"):
    return _generator(device).get_state()


def set_rng_state(new_state, device="tfmbs"):
    _generator(device).set_state(new_state)


def get_rng_state_all():
    return [g.get_state() for g in default_generators()]


def set_rng_state_all(new_states):
    for g, state in zip(default_generators(), new_states):
        g.set_state(state)
