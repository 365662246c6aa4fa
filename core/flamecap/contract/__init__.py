"""The one contract shared by the core and the Blender add-on (numpy + stdlib only; vendored into the add-on
by ``build_addon.py``): result file schema, FLAME-model ``.npz`` format, axis/camera conventions, and the
JSON-lines event protocol, ARKit names, rotation helpers, and the shape-key retargeting files and
mapping."""
from .conventions import (
    DEFAULT_CAM_R, DEFAULT_CAM_T, FLAME_TO_BLENDER, OPENCV_TO_GL_CAMERA, axis_angle_to_matrix,
    blender_camera_intrinsics, blender_camera_matrix_world, blender_to_flame_points,
    flame_to_blender_points, intrinsics_from_fov, matrix_to_axis_angle, project_points,
)
from . import rotations
from .arkit import ARKIT_NAMES, canonical_arkit_name, match_arkit_names
from .character import (
    ANIM_FORMAT, ANIM_VERSION, CHARACTER_FORMAT, CHARACTER_VERSION, MAPPING_DEFAULT, apply_mapping, load_animation,
    load_character, normalise_mapping, save_animation, save_character, validate_animation, validate_character,
)
from .errors import ContractError, OutputPathError
from .events import PROTOCOL_VERSION, JsonlEmitter, encode_event, iter_events, make_event, parse_event
from .model_format import FlameModelData, load_model_npz, model_meta, save_model_npz, topology_hash, validate_model
from .npzio import atomic_output, check_output_path, read_npz, write_npz_atomic
from .result import (
    JOINT_NAMES, PER_FRAME_PARAMS, RESULT_VERSION, TrackingResult, default_meta, load_result, save_result,
    validate,
)
