"""``EndOfTrainingTrigger``: fires at the iteration where the trainer's stop trigger ends training."""


def training_length(stop_trigger):
    """``(length, unit)`` of a stop trigger that knows it in advance (``IntervalTrigger``, as
    ``Trainer(updater, (20, 'epoch'))`` makes), else None (e.g. a custom callable)."""
    get_length = getattr(stop_trigger, 'get_training_length', None)
    if get_length is not None:
        return get_length()
    period, unit = getattr(stop_trigger, 'period', None), getattr(stop_trigger, 'unit', None)
    return None if period is None or unit is None else (period, unit)


class EndOfTrainingTrigger(object):
    """Fires when the updater has reached the stop trigger's length: at the last iteration of the
    training that this trainer runs.

    It keeps no state, so a trainer resumed from a snapshot with a longer stop trigger fires at its
    own end, and snapshots need no entry for it. ``EarlyStoppingTrigger`` reports its maximum
    length; a run stopped earlier never reaches it (pass ``trigger=`` to ``trainer.extend`` then).
    ``last_fired`` is the iteration at which it last returned True (None: never).
    """

    def __init__(self):
        self.last_fired = None

    def __call__(self, trainer):
        length = training_length(trainer.stop_trigger)
        if length is None:
            return False
        period, unit = length
        updater = trainer.updater
        now = updater.epoch_detail if unit == 'epoch' else updater.iteration
        if now >= period:
            self.last_fired = updater.iteration
            return True
        return False
