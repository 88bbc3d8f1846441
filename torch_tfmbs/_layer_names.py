"""The live ternary layers, by their packed weight: how memory_summary
names the fabric's resident frames (a frame belongs to a packed tensor)."""
import weakref

_layers = weakref.WeakSet()


def register(layer):
    _layers.add(layer)


def by_packed_weight(device_index):
    """{packed weight's data_ptr: the layer's name} for layers whose packed
    weight is on tfmbs:device_index. The name is the one convert() gave it
    (its path in the model), else its class and sizes."""
    names = {}
    for layer in list(_layers):
        p = layer.packed_weight
        if p is not None and p.device.type == "tfmbs" and p.device.index == device_index:
            names[p.data_ptr()] = layer.layer_name or (
                f"{type(layer).__name__}({layer.in_features}, {layer.out_features})")
    return names
