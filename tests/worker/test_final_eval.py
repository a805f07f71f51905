"""The version's evaluation reuses the one the Trainer ran at the last step: no second pass over the same
rows with the same weights delays "version ready"."""
from types import SimpleNamespace

from worker.recipes.common import final_evaluation


class FakeTrainer:
    def __init__(self, history, step, eval_dataset=("rows",), best_at_end=False):
        self.state = SimpleNamespace(log_history=history, global_step=step)
        self.args = SimpleNamespace(load_best_model_at_end=best_at_end)
        self.eval_dataset = eval_dataset
        self.passes = 0

    def evaluate(self):
        self.passes += 1
        return {"eval_loss": 9.0}


def test_the_last_steps_evaluation_is_reused():
    t = FakeTrainer([{"loss": 2.0, "step": 30}, {"eval_loss": 1.5, "eval_runtime": 3.0, "step": 30, "epoch": 1.0}], 30)
    assert final_evaluation(t) == {"eval_loss": 1.5, "eval_runtime": 3.0} and t.passes == 0


def test_a_pass_runs_when_the_last_step_was_not_evaluated_or_the_best_model_was_loaded():
    t = FakeTrainer([{"eval_loss": 1.5, "step": 20}], 30)
    assert final_evaluation(t) == {"eval_loss": 9.0} and t.passes == 1
    t = FakeTrainer([{"eval_loss": 1.5, "step": 30}], 30, best_at_end=True)
    assert final_evaluation(t) == {"eval_loss": 9.0} and t.passes == 1
    assert final_evaluation(FakeTrainer([], 30, eval_dataset=None)) == {}
