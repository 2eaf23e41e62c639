"""Save and load an adapted decode head, bound to the model it was adapted on.

A saved decoder records the model identity (family, variant, class count, decoder width, add-on
window, backbone weight fingerprint); loading it onto another model is refused with the fields
that differ. Saving is atomic (temporary file in the same folder, fsync, rename), so a crash or
a full disk never leaves a half-written decoder where a good one was.
"""
import copy
import os
import tempfile
import time

import torch

from ditta_ros.model.build import CheckpointError
from ditta_ros.model.heads import DiTTAHead
from ditta_ros.model.segmentor import ModelIdentity

FORMAT = 'ditta_ros.decoder/1'


def save_decoder(path: str, head: DiTTAHead, identity: ModelIdentity, info: dict) -> None:
    """Write `head`'s weights with the model identity and `info` (camera, method, ...)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    payload = {'format': FORMAT, 'identity': identity.as_dict(), 'saved_at': time.time(),
               'info': dict(info),
               'state_dict': {k: v.detach().cpu() for k, v in head.state_dict().items()}}
    fd, tmp = tempfile.mkstemp(prefix='.ditta_decoder_', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_decoder(path: str, source_head: DiTTAHead, identity: ModelIdentity) -> DiTTAHead:
    """A copy of `source_head` with the saved weights; raises CheckpointError, changing nothing,
    if the file is missing, unreadable or made for another model."""
    if not os.path.isfile(path):
        raise CheckpointError(f'adapted decoder not found: {path}')
    try:
        payload = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:
        raise CheckpointError(f'cannot read adapted decoder {path}: {exc.__class__.__name__}: '
                              f'{str(exc).splitlines()[0] if str(exc) else ""} '
                              '(truncated or not a ditta_ros decoder file?)') from exc
    if not isinstance(payload, dict) or payload.get('format') != FORMAT:
        raise CheckpointError(f'{path} is not a ditta_ros adapted decoder ({FORMAT})')
    saved = payload.get('identity', {})
    mine = identity.as_dict()
    differing = {k: (saved.get(k), v) for k, v in mine.items() if saved.get(k) != v}
    if differing:
        details = ', '.join(f'{k}: saved {a!r} vs running {b!r}' for k, (a, b) in differing.items())
        raise CheckpointError(f'adapted decoder {path} belongs to another model ({details})')
    head = copy.deepcopy(source_head)
    try:
        head.load_state_dict(payload['state_dict'], strict=True)
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f'adapted decoder {path} does not fit this model: {exc}') from exc
    return head.eval()
