"""Tests of the panoptic metrics against fixtures/panoptic_eval (panopticapi numbers)."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO_ROOT, case_id, fixture_cases
from axial_tf.metrics import (
    PanopticEvaluator,
    PanopticInstanceAP,
    PanopticQuality,
    SemanticMeanIoU,
    panoptic_segment_statistics,
)

EVAL_CASES = [path.parent for path in fixture_cases("panoptic_eval", "*/expected.json")]
TOLERANCE = 1e-6
PQ_GROUPS = {"All": "", "Things": "_things", "Stuff": "_stuff"}


class EvalCase:
    """One fixtures/panoptic_eval case: its maps, settings and expected numbers."""

    def __init__(self, case_dir):
        self.name = case_dir.name
        self.meta = json.loads((case_dir / "meta.json").read_text())
        self.expected = json.loads((case_dir / "expected.json").read_text())
        categories = json.loads((case_dir / "categories.json").read_text())
        self.thing_class_ids = [entry["id"] for entry in categories if entry["isthing"]]
        self.image_names = sorted(self.meta["images"])
        self.groundtruth = [np.load(case_dir / "gt" / f"{name}.npy") for name in self.image_names]
        self.prediction = [np.load(case_dir / "pred" / f"{name}.npy") for name in self.image_names]

    def conventions(self):
        """(crowd_convention, expected panoptic block, expected per-image block)."""
        yield (self.meta["crowd_convention"], self.expected["panoptic"],
               self.expected["panoptic_per_image"])
        alternative = self.expected.get("alternative_crowd_convention")
        if alternative is not None:
            # The alternative is DeepLab2's: thing pixels with instance 0 are ordinary.
            yield "none", alternative["panoptic"], alternative["panoptic_per_image"]

    def evaluator(self, crowd_convention):
        return PanopticEvaluator(
            self.meta["num_classes"], self.thing_class_ids,
            label_divisor=self.meta["label_divisor"],
            ignore_label=self.meta["ignore_label"],
            crowd_convention=crowd_convention,
        )

    def padded_batch(self, indices):
        """Stacks images, padding every map with void to the largest size."""
        height = max(self.groundtruth[i].shape[0] for i in indices)
        width = max(self.groundtruth[i].shape[1] for i in indices)
        void = self.meta["void_value"]
        batch = np.full((2, len(indices), height, width), void, np.int32)
        for slot, index in enumerate(indices):
            rows, cols = self.groundtruth[index].shape
            batch[0, slot, :rows, :cols] = self.groundtruth[index]
            batch[1, slot, :rows, :cols] = self.prediction[index]
        return batch[0], batch[1]


def _assert_report_matches(report, expected_panoptic, expected_semantic):
    """Compares a PanopticEvaluator report with an expected.json block."""
    for group, suffix in PQ_GROUPS.items():
        for key in ("pq", "sq", "rq"):
            assert report[key + suffix] == pytest.approx(expected_panoptic[group][key], abs=TOLERANCE)
    assert report["num_classes_counted"] == expected_panoptic["All"]["n"]
    assert report["num_things_counted"] == expected_panoptic["Things"]["n"]
    assert report["num_stuff_counted"] == expected_panoptic["Stuff"]["n"]
    for class_key, expected in expected_panoptic["per_class"].items():
        actual = report["per_class"][int(class_key)]
        assert actual["counted"] == expected["counted"], class_key
        assert actual["is_thing"] == bool(expected["isthing"]), class_key
        for key in ("tp", "fp", "fn"):
            assert actual[key] == expected[key], (class_key, key)
        assert actual["iou_sum"] == pytest.approx(expected["iou_sum"], abs=TOLERANCE)
        for key in ("pq", "sq", "rq"):
            if expected[key] is None:
                assert actual[key] is None, (class_key, key)
            else:
                assert actual[key] == pytest.approx(expected[key], abs=TOLERANCE), (class_key, key)
    assert report["miou"] == pytest.approx(expected_semantic["miou"], abs=TOLERANCE)
    assert report["num_valid_classes"] == expected_semantic["n_valid_classes"]
    for class_key, expected in expected_semantic["per_class"].items():
        actual = report["per_class"][int(class_key)]
        assert actual["intersection"] == expected["intersection"]
        assert actual["union"] == expected["union"]
        if expected["iou"] is None:
            assert actual["iou"] is None
        else:
            assert actual["iou"] == pytest.approx(expected["iou"], abs=TOLERANCE)


@pytest.fixture(scope="module", params=EVAL_CASES, ids=case_id)
def eval_case(request):
    return EvalCase(request.param)


@pytest.mark.sweep
def test_matches_panopticapi_numbers_one_image_per_update(eval_case):
    for crowd_convention, expected_panoptic, _ in eval_case.conventions():
        evaluator = eval_case.evaluator(crowd_convention)
        for groundtruth, prediction in zip(eval_case.groundtruth, eval_case.prediction):
            evaluator.update_state(groundtruth, prediction)
        _assert_report_matches(evaluator.report(), expected_panoptic, eval_case.expected["semantic"])


@pytest.mark.sweep
def test_per_image_statistics(eval_case):
    for crowd_convention, _, expected_per_image in eval_case.conventions():
        for index, name in enumerate(eval_case.image_names):
            statistics = panoptic_segment_statistics(
                eval_case.groundtruth[index], eval_case.prediction[index],
                num_classes=eval_case.meta["num_classes"],
                thing_class_ids=eval_case.thing_class_ids,
                label_divisor=eval_case.meta["label_divisor"],
                ignore_label=eval_case.meta["ignore_label"],
                crowd_convention=crowd_convention,
            )
            statistics = {key: value.numpy() for key, value in statistics.items()}
            for class_id in range(eval_case.meta["num_classes"]):
                expected = expected_per_image[name].get(
                    str(class_id), {"tp": 0, "fp": 0, "fn": 0, "iou_sum": 0.0}
                )
                for key in ("tp", "fp", "fn"):
                    assert statistics[key][class_id] == expected[key], (name, class_id, key)
                assert statistics["iou_sum"][class_id] == pytest.approx(expected["iou_sum"], abs=1e-12)


@pytest.mark.sweep
def test_streaming_batches_give_the_same_result(eval_case):
    """All images in one padded batch == batches of 2 in a tf.function == one by one."""
    crowd_convention, expected_panoptic, _ = next(eval_case.conventions())
    num_images = len(eval_case.image_names)
    one_batch = eval_case.evaluator(crowd_convention)
    one_batch.update_state(*eval_case.padded_batch(list(range(num_images))))

    chunked = eval_case.evaluator(crowd_convention)
    update = tf.function(
        chunked.update_state,
        input_signature=[tf.TensorSpec([None, None, None], tf.int32)] * 2,
    )
    for start in range(0, num_images, 2):
        update(*eval_case.padded_batch(list(range(start, min(start + 2, num_images)))))

    single = eval_case.evaluator(crowd_convention)
    for groundtruth, prediction in zip(eval_case.groundtruth, eval_case.prediction):
        single.update_state(groundtruth, prediction)

    reference = single.report()
    for report in (one_batch.report(), chunked.report()):
        _assert_report_matches(report, expected_panoptic, eval_case.expected["semantic"])
        _per_class_close(report, reference)


def _per_class_close(report, reference):
    """Asserts every per-class entry is equal (floats to 1e-12, None where None)."""
    for class_id, entry in reference["per_class"].items():
        for key, value in entry.items():
            other = report["per_class"][class_id][key]
            if isinstance(value, float):
                assert other == pytest.approx(value, abs=1e-12), (class_id, key)
            else:
                assert other == value, (class_id, key)


def test_reset_state_and_report_types():
    case = EvalCase(EVAL_CASES[0])
    evaluator = case.evaluator("coco")
    evaluator.update_state(case.groundtruth[0], case.prediction[0])
    evaluator.reset_state()
    report = evaluator.report()
    assert report["pq"] == 0.0 and report["miou"] == 0.0
    assert report["num_classes_counted"] == 0
    for group_suffix in PQ_GROUPS.values():
        assert isinstance(report["pq" + group_suffix], float)
    evaluator.update_state(case.groundtruth[0], case.prediction[0])
    report = evaluator.report()
    for key in ("pq", "sq", "rq", "pq_things", "pq_stuff", "miou"):
        assert isinstance(report[key], float) and 0.0 <= report[key] <= 1.0
    assert set(report["per_class"]) == set(range(case.meta["num_classes"]))


def test_keras_metric_interface():
    metric = PanopticQuality(num_classes=3, thing_class_ids=[2], name="pq")
    restored = PanopticQuality.from_config(metric.get_config())
    assert restored.get_config() == metric.get_config()
    groundtruth = np.array([[0, 0, 2001, 2001], [1000, 1000, 2001, 2001]], np.int32)
    prediction = np.array([[0, 0, 2007, 2007], [1000, 0, 2007, 2007]], np.int32)
    restored.update_state(groundtruth, prediction)
    result = restored.result()
    assert set(result) == {
        "pq", "sq", "rq", "pq_things", "sq_things", "rq_things", "pq_stuff", "sq_stuff", "rq_stuff"
    }
    # Thing: IoU 1. Stuff 0: IoU 2/3 (match). Stuff 1: IoU 1/2 (no match: FN).
    assert float(result["pq_things"]) == pytest.approx(1.0)
    assert float(result["pq_stuff"]) == pytest.approx((2 / 3 + 0.0) / 2)
    miou = SemanticMeanIoU(num_classes=3)
    miou.update_state(groundtruth, prediction)
    assert float(miou.result()) == pytest.approx((2 / 3 + 1 / 2 + 1.0) / 3)
    assert SemanticMeanIoU.from_config(miou.get_config()).get_config() == miou.get_config()


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"num_classes": 0, "thing_class_ids": []}, "num_classes"),
        ({"num_classes": 3, "thing_class_ids": [3]}, "not below num_classes"),
        ({"num_classes": 3, "thing_class_ids": [1, 1]}, "duplicates"),
        ({"num_classes": 3, "thing_class_ids": [1], "crowd_convention": "voc"}, "crowd_convention"),
        ({"num_classes": 3, "thing_class_ids": [1], "label_divisor": 0}, "label_divisor"),
    ],
)
def test_metric_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PanopticQuality(**kwargs)


def test_float_maps_are_rejected():
    metric = PanopticQuality(num_classes=3, thing_class_ids=[2])
    with pytest.raises(ValueError, match="integer"):
        metric.update_state(np.zeros((2, 2), np.float32), np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="sample_weight"):
        metric.update_state(np.zeros((2, 2), np.int32), np.zeros((2, 2), np.int32), sample_weight=1.0)


# tf.distribute: logical CPU devices must be configured before TF initialises
# its devices, which this test process has already done, hence a subprocess.
_DISTRIBUTED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from axial_tf.metrics import PanopticEvaluator

    request = json.loads(sys.stdin.read())
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    reports = []
    for case in request["cases"]:
        groundtruth = np.array(case["groundtruth"], np.int32)
        prediction = np.array(case["prediction"], np.int32)
        with strategy.scope():
            evaluator = PanopticEvaluator(**case["settings"])
        # Global batch 4 = 2 per replica; the last batch may be partial.
        dataset = tf.data.Dataset.from_tensor_slices((groundtruth, prediction)).batch(4)

        @tf.function
        def step(batch):
            strategy.run(lambda gt, pred: evaluator.update_state(gt, pred), args=batch)

        for batch in strategy.experimental_distribute_dataset(dataset):
            step(batch)
        tp = evaluator.panoptic_quality.accumulators["tp"].value
        per_replica_tp = [float(tf.reduce_sum(v)) for v in strategy.experimental_local_results(tp)]
        report = evaluator.report()
        report["per_class"] = {str(k): v for k, v in report["per_class"].items()}
        reports.append({"report": report, "per_replica_tp": per_replica_tp})
    print("RESULT " + json.dumps({"num_replicas": strategy.num_replicas_in_sync, "reports": reports}))
    """
)


@pytest.mark.full
def test_mirrored_strategy_two_cpu_replicas_match_single_device():
    cases = [EvalCase(path) for path in EVAL_CASES]
    request = {"cases": []}
    for case in cases:
        groundtruth, prediction = case.padded_batch(list(range(len(case.image_names))))
        request["cases"].append({
            "groundtruth": groundtruth.tolist(),
            "prediction": prediction.tolist(),
            "settings": {
                "num_classes": case.meta["num_classes"],
                "thing_class_ids": case.thing_class_ids,
                "label_divisor": case.meta["label_divisor"],
                "ignore_label": case.meta["ignore_label"],
                "crowd_convention": case.meta["crowd_convention"],
            },
        })
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    completed = subprocess.run(
        [sys.executable, "-c", _DISTRIBUTED_SCRIPT],
        input=json.dumps(request), capture_output=True, text=True, env=env,
        cwd=str(REPO_ROOT), timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result_line = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    output = json.loads(result_line[-1][len("RESULT "):])
    assert output["num_replicas"] == 2
    for case, distributed in zip(cases, output["reports"]):
        # Both replicas really accumulated part of the data.
        assert min(distributed["per_replica_tp"]) > 0, case.name
        report = distributed["report"]
        report["per_class"] = {int(k): v for k, v in report["per_class"].items()}
        single = case.evaluator(case.meta["crowd_convention"])
        for groundtruth, prediction in zip(case.groundtruth, case.prediction):
            single.update_state(groundtruth, prediction)
        _per_class_close(report, single.report())
        _assert_report_matches(report, case.expected["panoptic"], case.expected["semantic"])


# Instance AP (optional pycocotools).


def test_instance_ap_names_the_extra_when_pycocotools_is_missing(monkeypatch):
    for module in [name for name in sys.modules if name.startswith("pycocotools")] + ["pycocotools"]:
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match=r"pip install axial_tf\[coco\]"):
        PanopticInstanceAP(num_classes=3, thing_class_ids=[1])


def _two_object_scene():
    groundtruth = np.zeros((1, 20, 20), np.int32)
    groundtruth[0, 2:8, 2:8] = 1001
    groundtruth[0, 10:18, 10:18] = 1002
    prediction = np.zeros_like(groundtruth)
    prediction[0, 2:8, 2:8] = 1005  # exact copy of object 1
    prediction[0, 12:14, 0:5] = 1006  # a false detection
    return groundtruth, prediction


@pytest.mark.parametrize("false_detection_score,expected_ap", [(0.8, 51 / 101), (0.95, 0.5 * 51 / 101)])
def test_instance_ap_values(false_detection_score, expected_ap):
    pytest.importorskip("pycocotools")
    groundtruth, prediction = _two_object_scene()
    scores = np.zeros(prediction.shape, np.float32)
    scores[prediction == 1005] = 0.9
    scores[prediction == 1006] = false_detection_score
    metric = PanopticInstanceAP(num_classes=3, thing_class_ids=[1])
    metric.update_state(groundtruth, prediction, instance_scores=scores)
    report = metric.report()
    # One of two objects found: recall 0.5; precision 1 (or 0.5 when the
    # false detection ranks first) up to recall 0.5, i.e. 51 of 101 points.
    for key in ("ap", "ap50", "ap75", "ap_small"):
        assert report[key] == pytest.approx(expected_ap, abs=1e-9)
    assert report["ar100"] == pytest.approx(0.5)
    assert report["ap_large"] is None  # no large object in the ground truth


def test_instance_ap_streaming_and_perfect_prediction():
    pytest.importorskip("pycocotools")
    groundtruth, prediction = _two_object_scene()
    batch_gt = np.concatenate([groundtruth, groundtruth[:, ::-1]])
    batch_pred = np.concatenate([prediction, groundtruth[:, ::-1]])
    together = PanopticInstanceAP(num_classes=3, thing_class_ids=[1])
    together.update_state(batch_gt, batch_pred)
    split = PanopticInstanceAP(num_classes=3, thing_class_ids=[1])
    split.update_state(batch_gt[0], batch_pred[0])
    split.update_state(batch_gt[1:], batch_pred[1:])
    assert together.report() == split.report()
    perfect = PanopticInstanceAP(num_classes=3, thing_class_ids=[1])
    perfect.update_state(batch_gt, batch_gt)
    assert perfect.report()["ap"] == pytest.approx(1.0)


def test_instance_ap_never_scores_void_as_a_thing():
    pytest.importorskip("pycocotools")
    # ignore_label 2 is also listed as a thing class: its pixels stay void.
    groundtruth = np.zeros((1, 20, 20), np.int32)
    groundtruth[0, 2:8, 2:8] = 1001
    groundtruth[0, 10:18, 10:18] = 2000  # void
    prediction = np.zeros_like(groundtruth)
    prediction[0, 2:8, 2:8] = 1005  # exact copy of the object
    prediction[0, 0:2, 10:20] = 2001  # void predicted with an instance id
    metric = PanopticInstanceAP(
        num_classes=3, thing_class_ids=[1, 2], ignore_label=2, crowd_convention="none"
    )
    assert metric.thing_class_ids == (1,)
    metric.update_state(groundtruth, prediction)
    # Were void a thing, its ground truth would be a missed object (AP 0.5).
    assert metric.report()["ap"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"other than ignore_label=2; got thing_class_ids=\(2,\)"):
        PanopticInstanceAP(num_classes=3, thing_class_ids=[2], ignore_label=2)


def _crowd_scene():
    """An object, a crowd region (instance 2) and a detection inside the crowd."""
    groundtruth = np.zeros((20, 20), np.int32)
    groundtruth[2:8, 2:8] = 1001
    groundtruth[10:18, 10:18] = 1002  # 64 px, marked crowd by the crowd mask
    prediction = np.zeros_like(groundtruth)
    prediction[2:8, 2:8] = 1005  # exact copy of object 1
    prediction[10:14, 10:14] = 1006  # 16 px inside the crowd: IoU 16/64 with it as an object
    scores = np.where(prediction == 1006, 0.95, 0.9).astype(np.float32)
    return groundtruth, prediction, scores


@pytest.mark.parametrize("batched", [False, True])
def test_instance_ap_crowd_mask_ignores_detections_on_crowds(batched):
    pytest.importorskip("pycocotools")
    groundtruth, prediction, scores = _crowd_scene()
    crowd_mask = groundtruth == 1002  # [H, W]
    if batched:
        groundtruth, prediction, scores, crowd_mask = (
            array[np.newaxis] for array in (groundtruth, prediction, scores, crowd_mask)
        )
    plain = PanopticInstanceAP(num_classes=3, thing_class_ids=[1], crowd_convention="none")
    plain.update_state(groundtruth, prediction, instance_scores=scores)
    # No crowd: two objects, the top-scored detection is a false positive, so
    # precision 0.5 up to recall 0.5: 51 of 101 recall points at 0.5.
    assert plain.report()["ap"] == pytest.approx(0.5 * 51 / 101, abs=1e-9)
    crowd = PanopticInstanceAP(num_classes=3, thing_class_ids=[1], crowd_convention="none")
    crowd.update_state(groundtruth, prediction, instance_scores=scores,
                       crowd_mask=crowd_mask.astype(np.uint8))
    # The detection lies wholly inside the crowd (crowd IoU = 16/16): ignored;
    # the one object is found.
    report = crowd.report()
    assert report["ap"] == pytest.approx(1.0)
    assert report["ar100"] == pytest.approx(1.0)


def test_instance_ap_instance_zero_is_still_crowd_under_the_coco_convention():
    pytest.importorskip("pycocotools")
    groundtruth, prediction, scores = _crowd_scene()
    groundtruth[groundtruth == 1002] = 1000
    metric = PanopticInstanceAP(num_classes=3, thing_class_ids=[1])
    metric.update_state(groundtruth, prediction, instance_scores=scores)
    assert metric.report()["ap"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "argument,value,message",
    [
        ("crowd_mask", np.zeros((1, 20, 19), bool), r"crowd_mask has shape \(1, 20, 19\)"),
        ("crowd_mask", np.zeros((2, 20, 20), bool), r"must be groundtruth_panoptic's \(1, 20, 20\)"),
        ("crowd_mask", np.zeros((20, 20), np.float32), "crowd_mask must be a bool or int map"),
        ("instance_scores", np.zeros((1, 10, 20), np.float32), r"instance_scores has shape"),
        ("semantic_probs", np.zeros((1, 20, 20, 2), np.float32), r"semantic_probs has 2 channels"),
    ],
)
def test_instance_ap_names_the_mismatched_argument(argument, value, message):
    pytest.importorskip("pycocotools")
    groundtruth, prediction = _two_object_scene()
    metric = PanopticInstanceAP(num_classes=3, thing_class_ids=[1])
    with pytest.raises(ValueError, match=message):
        metric.update_state(groundtruth, prediction, **{argument: value})
    with pytest.raises(ValueError, match=r"predicted_panoptic has shape \(1, 20, 21\)"):
        metric.update_state(groundtruth, np.zeros((1, 20, 21), np.int32))
