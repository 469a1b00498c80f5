{
  "targets": [
    {
      "target_name": "vit_adapter",
      "sources": ["<!@(node ../scripts/libtorch-config.mjs --sources)"],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "<!@(node ../scripts/libtorch-config.mjs --include)"
      ],
      "defines": [
        "NAPI_EXPERIMENTAL",
        "NAPI_CPP_EXCEPTIONS",
        "NODE_ADDON_API_DISABLE_DEPRECATED",
        "_GLIBCXX_USE_CXX11_ABI=1",
        "<!@(node ../scripts/libtorch-config.mjs --defines)"
      ],
      "cflags!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17", "-std=gnu++20"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17", "-std=gnu++20"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-frtti", "-O2", "-fopenmp", "-Wno-unused-parameter", "-Wno-deprecated-declarations"],
      "ldflags": ["<!@(node ../scripts/libtorch-config.mjs --ldflags)", "-fopenmp"],
      "libraries": ["<!@(node ../scripts/libtorch-config.mjs --libs)"]
    }
  ]
}
