"""Experiment library: configs, models behind one interface, training, evaluation, figures."""
