"""ctx.metrics: the handler's own metrics, checked for Prometheus naming and a fixed label set."""

import pytest

from mfn.handlers.metrics import HandlerMetrics, InMemoryMetrics


@pytest.fixture
def metrics():
    factory = InMemoryMetrics()
    return factory, HandlerMetrics(factory, "m", 2)


def test_counter_gauge_and_histogram_record_with_model_and_version_labels(metrics):
    factory, handler_metrics = metrics
    tokens = handler_metrics.counter("tokens_total", "Tokens seen.", labels=["language"])
    tokens.inc(3, language="en")
    tokens.inc(language="en")
    handler_metrics.gauge("cache_entries", "Entries cached.").set(42)
    handler_metrics.histogram("tokenize_seconds", "Tokenizer time.").observe(0.002)
    assert factory.total("tokens_total", model="m", version="2", language="en") == 4
    assert factory.total("cache_entries", model="m") == 42
    assert factory.total("tokenize_seconds", version="2") == pytest.approx(0.002)


@pytest.mark.parametrize(
    ("name", "labels", "message"),
    [
        ("bad-name", [], "not a valid Prometheus name"),
        ("mfn_mine", [], "reserved for mfn and the servers"),
        ("nv_mine", [], "reserved"),
        ("ok_total", ["model"], "label 'model' is added by mfn"),
        ("ok_total", ["bad-label"], "not a valid Prometheus label name"),
    ],
)
def test_bad_names_and_labels_are_refused(metrics, name, labels, message):
    _, handler_metrics = metrics
    with pytest.raises(ValueError, match=message):
        handler_metrics.counter(name, "d", labels=labels)


def test_label_values_must_match_the_declaration_and_counters_only_rise(metrics):
    _, handler_metrics = metrics
    counter = handler_metrics.counter("things_total", "d", labels=["kind"])
    with pytest.raises(ValueError, match="give exactly the declared labels"):
        counter.inc(kind="a", extra="b")
    with pytest.raises(ValueError, match="only goes up"):
        counter.inc(-1, kind="a")
    with pytest.raises(ValueError, match="distinct and increasing"):
        handler_metrics.histogram("h_seconds", "d", buckets=[0.1, 0.01])
