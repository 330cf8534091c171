"""The upload pipeline: from a weights file and its JSON description to a stored network, in the order
that reads and allocates least before a refusal.

1. the description (``NetworkMeta``): names, tags, architecture, data set;
2. the architecture and the data set normalised; the network's size from the spec alone (``meta`` device,
   nothing allocated) against ``TOROID_MAX_PARAMETERS``;
3. the file's tensor names and shapes, from its header, renamed by the caller's maps (backend/names.py), against
   the spec's (``nets.check_shapes``; names that do not fit while the shapes do, in order, get a proposed
   mapping), before any tensor is made; then the tensors (never unpickled: safetensors, or torch.save's zip read with
   ``weights_only``), each checked for its dtype and finite values as the model loads them;
4. the owner's storage quota, the weights file and the row (``networks.store_state``), committed;
5. its evaluation queued (a worker measures its errors).

Every refusal is a domain error (backend/errors.py) saying what is wrong; the routes only parse and answer.
"""
from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from pydantic import ValidationError
from sqlalchemy.orm import Session

from workers.landscape import data, nets

from . import jobs, names, networks, store
from .config import get_settings
from .db import new_session
from .errors import DomainError, Invalid, ProposedNames
from .models import Job, Network
from .schemas import NetworkMeta
from .writes import committed_rows

log = logging.getLogger("toroid.api")


def parse_meta(meta: str) -> NetworkMeta:
    try:
        return NetworkMeta.model_validate(json.loads(meta))
    except json.JSONDecodeError as exc:
        raise Invalid(f"'meta' is not valid JSON: {exc}") from None
    except RecursionError:
        raise Invalid("'meta' is JSON nested too deeply") from None
    except ValidationError as exc:
        raise Invalid("meta: " + "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'meta'}: {e['msg']}" for e in exc.errors())) from None


@contextmanager
def _in_words(prefix: str, *errors: type[Exception]) -> Iterator[None]:
    """The science's and the store's ``errors`` raised inside, as ``Invalid`` with ``prefix`` before the message."""
    try:
        yield
    except errors as exc:
        raise Invalid(f"{prefix}{exc}") from None


@dataclass
class Prepared:
    """An upload parsed and checked, before the database is asked (``prepare``)."""

    info: NetworkMeta
    spec: dict
    options: dict
    mapping: dict
    model: Any


def architecture_of(meta: str) -> tuple[Any, tuple[int, ...] | None, int | None] | None:
    """(architecture, input shape, classes) of an upload's description, for the heavy check
    (backend/checks.py); None where it is not what ``prepare`` accepts (which then says why). Cheap."""
    try:
        info = NetworkMeta.model_validate(json.loads(meta))
    except Exception:  # noqa: BLE001 - prepare names it
        return None
    try:
        shape, n_classes = data.shape_of(info.dataset, data.normalize_options(info.dataset, info.dataset_options))
        return info.architecture, tuple(shape), n_classes
    except Exception:  # noqa: BLE001 - prepare names it
        return info.architecture, None, None


def store_upload(session: Session, user, meta: str, filename: str, blob: bytes) -> int:
    """``prepare`` then ``store_prepared``, in the caller's thread."""
    return store_prepared(session, user, prepare(meta, filename, blob), filename)


def store_prepared(session: Session, user, prepared: Prepared, filename: str) -> int:
    """The stored network's id (committed, its evaluation queued). Also when the row was committed and
    something failed after the commit: the upload is then answered as the success it was."""
    with committed_rows(session, Network) as made, committed_rows(session, Job) as queued:
        try:
            return _store(session, user, prepared, filename)
        except DomainError:
            raise
        except Exception:
            if not made:
                raise
            log.warning("network %s was committed, then its upload failed; answering with it", made[0], exc_info=True)
    if not queued:  # its evaluate job, on a fresh connection
        with new_session() as fresh:
            jobs.submit(fresh, "evaluate", {"network": made[0]}, user=user, check_quota=False)
    return made[0]


def prepare(meta: str, filename: str, blob: bytes) -> Prepared:
    """Steps 1-3 (no database: the API runs them in the checks' pool, backend/checks.py)."""
    info = parse_meta(meta)
    with _in_words("architecture: ", nets.SpecError):
        spec = nets.normalize_spec(info.architecture)
    with _in_words("dataset: ", data.DatasetError):
        options = data.normalize_options(info.dataset, info.dataset_options)
        shape, n_classes = data.shape_of(info.dataset, options)
    # the spec's size from the spec alone (nothing allocated), then the file's names and shapes against it
    # from its header, before any real tensor or module is made
    with _in_words("architecture: ", nets.SpecError):
        nets.check_size(spec, shape, n_classes, get_settings().max_parameters, get_settings().max_activation_bytes)
        expected = nets.meta_model(spec, shape, n_classes).state_dict()
    expected_bytes = sum(t.numel() * t.element_size() for t in expected.values())
    # a file may hold float64 where the model has float32: twice the bytes, plus the archive's own records
    with _in_words("", store.UploadError), _in_words("rename: ", names.NamesError):
        shapes = store.upload_shapes(filename, blob, max_bytes=2 * expected_bytes + 64 * 1024)
        mapping = names.renamed(list(shapes), info.keys, info.rename)  # the caller's own rename maps, if any
    original, shapes = list(shapes.items()), {mapping[k]: v for k, v in shapes.items()}
    try:
        nets.check_shapes({k: tuple(v.shape) for k, v in expected.items()}, shapes,
                          f"{json.dumps(info.architecture, separators=(', ', ': '))} on {info.dataset}")
    except nets.WeightsError as exc:  # names that do not fit: a mapping of the file's own names is proposed when
        # the shapes fit in order (it replaces any rename map sent); never applied unasked
        proposal = names.propose(original, [(k, tuple(t.shape)) for k, t in expected.items()])
        if proposal is None:
            raise Invalid(str(exc)) from None
        raise ProposedNames(f"{exc}; the file's tensors have the architecture's shapes one to one in order, so these "
                            f"names are proposed (also in the answer's 'proposed'): send {json.dumps(proposal)[:2000]} "
                            "in meta to accept them (client: accept_proposed=True; CLI: --accept-proposed-names)",
                            proposal) from None
    with _in_words("", store.UploadError):
        state = store.parse_upload(filename, blob, max_bytes=2 * expected_bytes + 64 * 1024)
    state = {mapping.get(k, k): v for k, v in state.items()}
    with _in_words("", nets.WeightsError), _in_words("architecture: ", nets.SpecError):  # (distinct classes)
        model = nets.build(spec, shape, n_classes)
        nets.load_weights(model, state)
    return Prepared(info, spec, options, mapping, model)


def _store(session: Session, user, prepared: Prepared, filename: str) -> int:
    """Steps 4-5."""
    info, spec, options, mapping, model = (prepared.info, prepared.spec, prepared.options, prepared.mapping,
                                           prepared.model)
    try:  # a first look, before the file is written; create_network checks again, atomically
        networks.check_quota(session, user.name, networks.state_bytes(model.state_dict()), user.max_stored_bytes)
        source = {"kind": "uploaded", "filename": filename,
                  **({"renamed": {k: v for k, v in mapping.items() if k != v}} if info.keys or info.rename else {})}
        net = networks.store_state(session, model.state_dict(), max_stored_bytes=user.max_stored_bytes, name=info.name,
                                   owner=user.name, architecture=spec, dataset=info.dataset, dataset_options=options,
                                   source=source, tags=info.tags,
                                   visibility=info.visibility, n_params=nets.n_parameters(model), history=[])
        session.commit()
    except networks.QuotaError:
        session.rollback()
        raise
    # Its train and test errors are measured by a worker, not in this request.
    jobs.submit(session, "evaluate", {"network": net.id}, user=user, check_quota=False)
    return net.id
