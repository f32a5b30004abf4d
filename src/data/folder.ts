/**
 * Folders of image files, in the two layouts PyTorch users have:
 * - flat: image files with an optional labels file (`labels.csv` / `labels.txt`, see labels.ts);
 * - ImageFolder: no image at the top, one sub-folder per class (`root/cat/001.jpg`); classes are the
 *   sub-folder names sorted by code point (Python's `sorted`, as torchvision's `find_classes`), files are
 *   found recursively in each and sorted as torchvision's `make_dataset` does (by folder path, then name),
 *   and an image's label is its class's index (or its index in the class list, when one is given).
 * Hidden files and folders (".name") are skipped. Files are decoded with decodeImageChecked (pixel cap before
 * decoding) and brought to one size with the optional Resize/CenterCrop geometry; a file that cannot be
 * decoded goes to `errors`, a size that still differs is an error that says which flags fix it.
 */
import { decodeImageChecked } from "./decode.ts";
import { applyGeometry, type Geometry } from "./geometry.ts";
import { convertChannels, type DecodedImage, type ImageSet, type ItemError } from "./images.ts";
import { compareCodePoints, type LabelEntry, parseLabelsText } from "./labels.ts";

export interface FolderOptions {
  /** Labels file; defaults to `labels.csv` or `labels.txt` inside the folder when one exists. */
  labels?: string;
  /** Output channels: "auto" (default) gives 1 when every image is gray, else 3. */
  channels?: 1 | 3 | "auto";
  /** torchvision Resize/CenterCrop applied to every image as it is read. */
  geometry?: Geometry;
  /** Pixel cap per image, checked on the header before decoding (see decode.ts). */
  maxPixels?: number;
  /** Class names, in model output order: class-name labels and ImageFolder folders map through them. */
  classes?: string[];
}

/** Extensions taken as images: decoded ones, and others torchvision lists, which fail per file as unsupported. */
export const IMAGE_EXT = /\.(png|jpe?g|webp|bmp|gif|tiff?|ppm|pgm|pbm|pnm|heic|heif|avif)$/i;

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

interface Listing {
  files: string[];
  dirs: string[];
}

async function list(dir: string): Promise<Listing> {
  const files: string[] = [], dirs: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.name.startsWith(".")) continue;
    let isDir = e.isDirectory, isFile = e.isFile;
    if (e.isSymlink) {
      const info = await Deno.stat(`${dir}/${e.name}`).catch(() => null);
      isDir = info?.isDirectory ?? false;
      isFile = info?.isFile ?? false;
    }
    if (isDir) dirs.push(e.name);
    else if (isFile && IMAGE_EXT.test(e.name)) files.push(e.name);
  }
  files.sort(compareCodePoints);
  dirs.sort(compareCodePoints);
  return { files, dirs };
}

/** torchvision's make_dataset order for one class folder: sorted(os.walk(...)), then sorted file names. */
async function walkClass(root: string, rel: string): Promise<string[]> {
  const roots: { path: string; files: string[] }[] = [];
  const visit = async (path: string, depth: number) => {
    if (depth > 32) {
      throw new Error(`Cannot read images "${root}": folders nest deeper than 32 (a symlink loop?)`);
    }
    const { files, dirs } = await list(`${root}/${path}`);
    roots.push({ path, files });
    for (const d of dirs) await visit(`${path}/${d}`, depth + 1);
  };
  await visit(rel, 0);
  roots.sort((a, b) => compareCodePoints(a.path, b.path));
  return roots.flatMap((r) => r.files.map((f) => `${r.path}/${f}`));
}

function sizeError(dir: string, g: Geometry, a: { name: string; img: DecodedImage }, b: typeof a): Error {
  const flags = [
    g.resize !== undefined ? `--resize ${g.resize}` : "",
    g.centerCrop !== undefined ? `--center-crop ${g.centerCrop}` : "",
  ].filter(Boolean).join(" ");
  const fix = g.resize === undefined
    ? "give --resize N --center-crop M to bring them to one size (as torchvision's Resize and CenterCrop)"
    : "add --center-crop M (or --resize HxW) so that every image ends at one size";
  return new Error(
    `Images in "${dir}" differ in size${
      flags ? ` after ${flags}` : ""
    }: "${b.name}" is ${b.img.height}x${b.img.width} ` +
      `but "${a.name}" is ${a.img.height}x${a.img.width} (HxW); ${fix}`,
  );
}

/**
 * Reads every image of `dir` (flat or ImageFolder layout, see the module comment). A file that cannot be
 * decoded goes to `errors` instead of failing the whole folder.
 */
export async function readImageFolder(
  dir: string,
  options: FolderOptions = {},
): Promise<{ set: ImageSet; errors: ItemError[] }> {
  const top = await list(dir);
  let files = top.files;
  let classes: string[] | undefined;
  let classOf: number[] | undefined;
  if (files.length === 0 && top.dirs.length > 0) {
    classes = top.dirs;
    files = [];
    classOf = [];
    for (const [k, c] of classes.entries()) {
      const found = await walkClass(dir, c);
      files.push(...found);
      classOf.push(...found.map(() => k));
    }
    if (options.classes) {
      const index = new Map(options.classes.map((c, i) => [c, i]));
      const missing = classes.find((c) => !index.has(c));
      if (missing !== undefined) {
        throw new Error(
          `Class folder "${missing}" of "${dir}" is not one of the ${options.classes.length} class names ` +
            `(${options.classes.slice(0, 5).join(", ")}${options.classes.length > 5 ? ", ..." : ""})`,
        );
      }
      classOf = classOf.map((k) => index.get(classes![k])!);
      classes = options.classes;
    }
  }
  if (files.length === 0) {
    throw new Error(
      `Cannot read images "${dir}": the folder has no image files (.png, .jpg, .jpeg, .webp, .bmp), ` +
        `and no class sub-folders holding some`,
    );
  }

  let labelsPath = options.labels;
  if (labelsPath === undefined) {
    for (const f of ["labels.csv", "labels.txt"]) {
      if (await exists(`${dir}/${f}`)) labelsPath = `${dir}/${f}`;
    }
  }
  let parsed;
  if (labelsPath !== undefined) {
    let text: string;
    try {
      text = await Deno.readTextFile(labelsPath);
    } catch (e) {
      throw new Error(`Cannot read labels file "${labelsPath}": ${(e as Error).message.split("\n")[0]}`);
    }
    parsed = parseLabelsText(text, labelsPath, { classes: options.classes });
    if (parsed.classes) classes = parsed.classes;
  }
  if (parsed && "list" in parsed && parsed.list.length !== files.length) {
    throw new Error(
      `Labels file "${labelsPath}" has ${parsed.list.length} labels but "${dir}" has ${files.length} image files`,
    );
  }

  const g = options.geometry ?? {};
  const errors: ItemError[] = [];
  const decoded: { name: string; img: DecodedImage; label?: LabelEntry }[] = [];
  for (const [i, name] of files.entries()) {
    let img: DecodedImage;
    try {
      const bytes = await Deno.readFile(`${dir}/${name}`);
      img = applyGeometry(
        decodeImageChecked(bytes, { name: `${dir}/${name}`, maxPixels: options.maxPixels }),
        g,
      );
    } catch (e) {
      const message = (e as Error).message;
      errors.push({
        name,
        message: message.startsWith("Cannot") ? message : `Cannot read image "${dir}/${name}": ${message}`,
      });
      continue;
    }
    const first = decoded[0];
    if (first && (img.height !== first.img.height || img.width !== first.img.width)) {
      throw sizeError(dir, g, first, { name, img });
    }
    let label: LabelEntry | undefined;
    if (parsed && "list" in parsed) label = parsed.list[i];
    else if (parsed && "byName" in parsed) {
      label = parsed.byName.get(name);
      if (label === undefined) {
        throw new Error(`Labels file "${labelsPath}" has no label for image "${name}"`);
      }
    } else if (classOf) label = { label: classOf[i], line: 0 };
    decoded.push({ name, img, label });
  }

  const channels = options.channels === undefined || options.channels === "auto"
    ? (decoded.every((d) => d.img.channels === 1) ? 1 : 3)
    : options.channels;
  const height = decoded[0]?.img.height ?? 0, width = decoded[0]?.img.width ?? 0;
  const size = channels * height * width;
  const pixels = new Uint8Array(decoded.length * size);
  decoded.forEach((d, k) => pixels.set(convertChannels(d.img, channels).pixels, k * size));
  const set: ImageSet = {
    n: decoded.length,
    channels,
    height,
    width,
    pixels,
    names: decoded.map((d) => d.name),
  };
  if (parsed || classOf) {
    set.labels = Int32Array.from(decoded, (d) => d.label!.label);
    const lines = decoded.map((d) => d.label!.line);
    const names = set.names!;
    set.labelsFrom = parsed ? labelsPath : dir;
    set.labelWhere = parsed ? (i) => `line ${lines[i]}` : (i) => `class folder "${names[i].split("/")[0]}"`;
  }
  if (classes) set.classes = classes;
  return { set, errors };
}
