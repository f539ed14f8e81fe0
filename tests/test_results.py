"""Results fit the JAX/xarray stack: pytrees through jit/vmap/tree.map, a short repr, named xarray axes."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import linoverfit as lo
from linoverfit.results import Result


@pytest.fixture(scope="module")
def results():
    """One of every result class, from a tiny batched run (2 seeds) so every named axis is present."""
    task = lo.tasks.power_law(5, 5, key=jax.random.key(0))
    ft = lo.tasks.shifted(task, kind="additive", size=0.1, key=jax.random.key(1), scale="absolute")
    net = lo.DeepLinear((5, 5, 5))
    run = lo.pretrain(net, net.init(jax.random.key(2), scale=1e-3, seeds=2), task, lr=0.05,
                      checkpoints=lo.log_checkpoints(1500, 6))
    ftr = lo.finetune(net, run, ft, lr=(0.01, 0.03, 0.1), steps=20, record_every=10, return_weights=True)
    sens = lo.sensitivity.gaussian(net, run, gamma=(0.01, 0.03), samples=8, key=jax.random.key(3))
    single = lo.pretrain(net, net.init(jax.random.key(2), scale=1e-3), task, lr=0.05, checkpoints=[10, 300, 1500])
    pred = lo.theory.forgetting.predict_finetune(single, ft, lr=(0.01, 0.03), steps=20, return_maps=True)
    tp = lo.theory.turning.turning_point(task, 0.03, widths=net, s0=1e-3)
    return {"run": run, "ftr": ftr, "sens": sens, "pred": pred, "tp": tp}


def _loss_field(r):
    return "loss" if hasattr(r, "loss") else "pretrain_loss_after"


def _result_classes():
    import linoverfit.theory  # noqa: F401  (registers its result classes)

    seen, todo = set(), list(Result.__subclasses__())
    while todo:
        cls = todo.pop()
        if cls not in seen:
            seen.add(cls)
            todo += cls.__subclasses__()
    return seen


def test_every_result_class_is_a_registered_pytree(results):
    classes = _result_classes()
    assert {type(r) for r in results.values()} <= classes
    for cls in classes:
        # registered: an instance flattens into one child per data field (an unregistered dataclass
        # would be one opaque leaf); fields are set to 0 so that any class can be probed
        obj = object.__new__(cls)
        for f in dataclasses.fields(cls):
            object.__setattr__(obj, f.name, "x" if f.type in ("str", str) else 0)
        data = [f.name for f in dataclasses.fields(cls) if not f.metadata.get("static") and f.type not in ("str", str)]
        assert len(data) > 1 and jax.tree.leaves(obj) == [0] * len(data), cls


@pytest.mark.parametrize("name", ["run", "ftr", "sens", "pred", "tp"])
def test_result_passes_through_jit_and_tree_map(results, name):
    r = results[name]
    field = _loss_field(r)
    got = jax.jit(lambda r: getattr(r, field).sum())(r)
    np.testing.assert_allclose(got, np.sum(np.asarray(getattr(r, field))), rtol=1e-12)
    # jit returns a result of the same class with the same values (static fields kept as they are)
    back = jax.jit(lambda r: r)(r)
    assert type(back) is type(r)
    for a, b in zip(jax.tree.leaves(r), jax.tree.leaves(back)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    doubled = jax.tree.map(lambda x: 2 * jnp.asarray(x) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) else x, r)
    assert type(doubled) is type(r)
    np.testing.assert_allclose(np.asarray(getattr(doubled, field)), 2 * np.asarray(getattr(r, field)), rtol=1e-15)


@pytest.mark.parametrize("name", ["run", "ftr", "sens", "pred"])
def test_vmap_over_a_stack_of_results(results, name):
    r = results[name]
    field = _loss_field(r)
    stacked = jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), r, r)
    sums = jax.vmap(lambda r: getattr(r, field).sum())(stacked)
    np.testing.assert_allclose(sums, [np.sum(np.asarray(getattr(r, field)))] * 2, rtol=1e-12)


def test_static_fields_are_metadata(results):
    ftr = results["ftr"]
    leaves, treedef = jax.tree.flatten(ftr)
    assert ftr.ft_steps not in [x for x in leaves if np.ndim(x) == 0]
    assert "20" in str(treedef)  # ft_steps lives in the tree structure
    # a jitted function of a result compiles once for new values, again for a new static value
    f = jax.jit(lambda r: r.pretrain_loss_after.sum())
    f(ftr)
    assert f._cache_size() == 1
    f(jax.tree.map(lambda x: x, ftr))
    assert f._cache_size() == 1
    f(dataclasses.replace(ftr, ft_steps=21))
    assert f._cache_size() == 2


def _w1_shaped():
    """Results with the shapes of workload W1 (48 checkpoints, 4 seeds, width 64, 3 lrs, 2 gammas)."""
    C, S, R, G, d = 48, 4, 3, 2, 64
    z = lambda *shape: np.zeros(shape, np.float32)  # noqa: E731
    task = lo.tasks.power_law(d, d, key=jax.random.key(0))
    steps = lo.log_checkpoints(32768, C)
    run = lo.PretrainResult(steps=steps, loss=z(C, S), weights=(z(C, S, d, d), z(C, S, d, d)), task=task, lr=0.05)
    ftr = lo.FinetuneResult(steps=steps, lr=np.array([0.01, 0.03, 0.1]), ft_steps=1000, l2=0.0, pretrain_lr=0.05,
                            pretrain_loss_before=z(C, S), finetune_loss_before=z(C, S), pretrain_loss_after=z(C, R, S),
                            finetune_loss_after=z(C, R, S), diverged=np.zeros((C, R, S), bool),
                            diverged_step=np.full((C, R, S), -1, np.int32))
    sens = lo.SensitivityResult(steps=steps, gamma=np.array([0.01, 0.03]), samples=256, pretrain_lr=0.05, loss=z(C, S),
                                perturbed_loss=z(C, G, S), sensitivity=z(C, G, S), stderr=z(C, G, S))
    return run, ftr, sens


def test_repr_is_short_and_shows_shapes(results):
    for r in list(results.values()) + list(_w1_shaped()):
        text = repr(r)
        assert text.startswith(type(r).__name__ + "(")
        assert len(text) < 1000, (type(r).__name__, len(text))
    run, ftr, sens = _w1_shaped()
    assert "loss=f32[48,4]" in repr(run) and "f32[48,4,64,64]" in repr(run) and "lr=0.05" in repr(run)
    assert "steps=i64[48] 1..32768" in repr(run)
    assert "lr=f64[3] [0.01, 0.03, 0.1]" in repr(ftr) and "ft_steps=1000" in repr(ftr)
    assert "samples=256" in repr(sens)
    # inside jit the repr shows shapes only (no attempt to read traced values)
    seen = []
    jax.jit(lambda r: seen.append(repr(r)) or r.loss.sum())(results["run"])
    assert "loss=f" in seen[0] and "..[" not in seen[0]


def test_to_xarray_named_dims_and_coords(results):
    pytest.importorskip("xarray")
    run, ftr, sens = results["run"], results["ftr"], results["sens"]
    ds = run.to_xarray()
    assert ds.loss.dims == ("checkpoint", "seed")
    assert ds.weights_1.dims == ("checkpoint", "seed", "unit1", "unit0")
    np.testing.assert_array_equal(ds.steps.values, run.steps)
    np.testing.assert_allclose(ds.t.values, run.t)
    np.testing.assert_array_equal(ds.loss.values, np.asarray(run.loss))
    assert ds.attrs["lr"] == run.lr

    ds = ftr.to_xarray()
    assert ds.pretrain_loss_after.dims == ("checkpoint", "lr", "seed")
    assert ds.pretrain_loss_trajectory.dims == ("checkpoint", "lr", "seed", "record")
    assert ds.weights_2.dims == ("checkpoint", "lr", "seed", "unit2", "unit1")
    np.testing.assert_array_equal(ds.record_steps.values, ftr.record_steps)
    # selection by value along a named axis = positional indexing of the array
    np.testing.assert_array_equal(ds.pretrain_loss_after.sel(lr=0.03).values, np.asarray(ftr.pretrain_loss_after)[:, 1])
    # broadcasting by name: forgetting as the property computes it
    forgetting = (ds.pretrain_loss_after - ds.pretrain_loss_before).transpose("checkpoint", "lr", "seed")
    np.testing.assert_allclose(forgetting.values, np.asarray(ftr.forgetting), rtol=1e-12)
    df = ds.pretrain_loss_after.to_dataframe()
    assert len(df) == ftr.pretrain_loss_after.size and set(df.index.names) == {"checkpoint", "lr", "seed"}

    ds = sens.to_xarray()
    assert ds.sensitivity.dims == ("checkpoint", "gamma", "seed")
    np.testing.assert_array_equal(ds.stderr.sel(gamma=0.01, seed=1).values, np.asarray(sens.stderr)[:, 0, 1])
    assert ds.attrs["samples"] == sens.samples

    ds = results["pred"].to_xarray()
    assert ds.pretrain_loss_after.dims == ("checkpoint", "lr") and "tau" in ds.coords
    assert ds.end_to_end.dims == ("checkpoint", "lr", "d_out", "d_in")
    ds = results["tp"].to_xarray()
    assert ds.curve.dims == ("grid",) and ds.attrs["t_star"] == results["tp"].t_star


def test_to_xarray_plot(results, tmp_path):
    pytest.importorskip("xarray")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds = results["ftr"].to_xarray()
    lines = ds.pretrain_loss_after.sel(lr=0.01).plot.line(x="t", hue="seed", xscale="log")
    assert len(lines) == 2  # one line per seed
    np.testing.assert_allclose(lines[0].get_xdata(), results["ftr"].t)
    plt.close("all")


def test_save_load_exact_after_tree_map(results, tmp_path):
    # save/load stay exact for a result that went through jax (leaves become jax arrays)
    for name in ("run", "ftr", "sens", "pred", "tp"):
        r = jax.jit(lambda r: r)(results[name])
        back = type(r).load(r.save(tmp_path / name))
        for f in dataclasses.fields(r):
            a, b = getattr(r, f.name), getattr(back, f.name)
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
                np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("name", ["run", "ftr", "sens"])
def test_file_of_an_older_release_loads_with_new_optional_fields_defaulted(results, name, tmp_path):
    """A file written before an optional field existed (e.g. 0.1.0 had no ``pretrain_t``, ``prediction``,
    ``past_edge``, ``l2_on``) loads, each absent optional field taking its default; a missing required
    field is still refused by name."""
    r = results[name]
    path = r.save(tmp_path / name)
    optional = [f.name for f in dataclasses.fields(r)
                if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING]
    assert optional
    with np.load(path) as data:
        full = {k: data[k] for k in data.files}
    old = {k: v for k, v in full.items() if k.split(".", 1)[0] not in optional}
    np.savez(tmp_path / "old.npz", **old)
    back = type(r).load(tmp_path / "old.npz")
    for f in optional:
        default = dataclasses.fields(r)[[g.name for g in dataclasses.fields(r)].index(f)].default
        assert getattr(back, f) == default or (getattr(back, f) is None and default is None), f
    required = next(f.name for f in dataclasses.fields(r) if f.name not in optional)
    np.savez(tmp_path / "broken.npz", **{k: v for k, v in full.items() if k.split(".", 1)[0] != required})
    with pytest.raises(lo.errors.ResultFileError, match=f"field '{required}' is missing"):
        type(r).load(tmp_path / "broken.npz")
