"""torch.tfmbs.amp: torch.cuda.amp's names for tfmbs, so code written with
torch.cuda.amp runs with "cuda" changed to "tfmbs". Each is torch.amp's own,
with device_type="tfmbs"; unlike torch.cuda.amp's they are not deprecated,
as they are what such code finds under the device's name."""
import functools

import torch


class autocast(torch.amp.autocast_mode.autocast):  # noqa: N801 (torch.cuda.amp's name)
    """torch.autocast("tfmbs", ...) with torch.cuda.amp.autocast's signature."""

    def __init__(self, enabled=True, dtype=torch.float16, cache_enabled=True):
        super().__init__("tfmbs", enabled=enabled, dtype=dtype, cache_enabled=cache_enabled)


class GradScaler(torch.amp.GradScaler):
    """torch.amp.GradScaler("tfmbs", ...) with torch.cuda.amp.GradScaler's signature."""

    def __init__(self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5,
                 growth_interval=2000, enabled=True):
        super().__init__("tfmbs", init_scale=init_scale, growth_factor=growth_factor,
                         backoff_factor=backoff_factor, growth_interval=growth_interval,
                         enabled=enabled)


custom_fwd = functools.partial(torch.amp.custom_fwd, device_type="tfmbs")
custom_bwd = functools.partial(torch.amp.custom_bwd, device_type="tfmbs")
