"""FOCUS inside other evaluation harnesses (layer 5, beside :mod:`focus_modules.eval`).

- :mod:`focus_modules.integrations.harness`: the generation loop over plain requests that a
  harness plugin calls; imports no harness.
- :mod:`focus_modules.integrations.lmms_eval_model`: the lmms-eval model class (``--model focus``),
  imported only by lmms-eval through the ``lmms_eval.models`` entry point
  (``pip install "focus-modules[lmms]"``).
- :mod:`focus_modules.integrations.vlmevalkit`: a model object for VLMEvalKit's ``infer_data_job``.
"""
