"""``python -m tools.deploy_app --input DICOM_DIR --output OUT_DIR --bundle BUNDLE_DIR``."""

from tools.deploy_app.app import main

main()
