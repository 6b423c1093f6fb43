from systems import base, dreamfusion, image_fitting, prolificdreamer  # noqa: F401
