from systems import base, dreamfusion, image_fitting, prolificdreamer, text_to_image  # noqa: F401
