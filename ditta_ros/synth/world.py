"""A procedural street seen from a car moving along it, rendered with per-frame labels.

World coordinates in metres: x lateral (right positive), y up, z forward along the road. The
camera (height 1.5 m) drives along z; everything is a flat-shaded textured plane or box rendered
back to front, so labels, instance ids and a depth map come out exactly with the image.
Objects keep their instance id while they are in view (object tracks); cars and people move on
their own, so they overtake, cross, occlude each other and appear in the distance.

Classes are Cityscapes label ids (road 7, sidewalk 8, building 11, pole 17, traffic light 19,
traffic sign 20, vegetation 21, terrain 22, sky 23, person 24, car 26, ...); thing instances get
id = label_id * 1000 + k, as in Cityscapes' instanceIds.
"""
from dataclasses import dataclass, field
from typing import List, Tuple

import numpy as np

ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE = 7, 8, 11, 12, 13, 17
TRAFFIC_LIGHT, TRAFFIC_SIGN, VEGETATION, TERRAIN, SKY = 19, 20, 21, 22, 23
PERSON, RIDER, CAR, TRUCK, BUS, BICYCLE = 24, 25, 26, 27, 28, 33

CAMERA_HEIGHT = 1.5
ROAD_HALF_WIDTH = 3.6
SIDEWALK_WIDTH = 3.0
VIEW_DISTANCE = 90.0


@dataclass
class Camera:
    width: int
    height: int
    focal: float
    cx: float
    cy: float

    @classmethod
    def for_size(cls, width: int, height: int) -> 'Camera':
        return cls(width, height, 0.85 * width, width / 2.0, 0.46 * height)


@dataclass
class Box:
    """An axis-aligned box (x0..x1, y0..y1, z0..z1) with a class, id and appearance."""
    x0: float
    x1: float
    y0: float
    y1: float
    z0: float
    z1: float
    label: int
    instance: int
    color: Tuple[int, int, int]
    style: str = 'plain'              # plain | facade | car | person | crown | sign | light
    vx: float = 0.0                   # own motion, m/s
    vz: float = 0.0
    seed: int = 0

    def moved(self, dt: float) -> None:
        self.x0 += self.vx * dt
        self.x1 += self.vx * dt
        self.z0 += self.vz * dt
        self.z1 += self.vz * dt


@dataclass
class Frame:
    image: np.ndarray      # RGB uint8 [H, W, 3] (before domain effects)
    label_ids: np.ndarray  # uint8 [H, W] Cityscapes label ids
    instance_ids: np.ndarray  # int32 [H, W]
    depth: np.ndarray      # float32 [H, W] metres (sky: VIEW_DISTANCE * 2)


def _hash_noise(a: np.ndarray, b: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic per-cell noise in [0, 1) from integer world cells (textures that stick)."""
    h = (a.astype(np.int64) * 73856093) ^ (b.astype(np.int64) * 19349663) ^ (seed * 83492791)
    return ((h % 1009) / 1009.0).astype(np.float32)


@dataclass
class Street:
    """The world: static scenery generated along the road, and moving agents."""
    rng: np.random.Generator
    speed: float
    boxes: List[Box] = field(default_factory=list)
    generated_until: float = 0.0
    next_instance: dict = field(default_factory=dict)
    sky_seed: int = 0

    def _instance(self, label: int) -> int:
        k = self.next_instance.get(label, 0)
        self.next_instance[label] = k + 1
        return label * 1000 + k

    def _color(self, base, spread=25):
        return tuple(int(np.clip(c + self.rng.integers(-spread, spread + 1), 0, 255))
                     for c in base)

    def extend(self, until: float) -> None:
        """Generate scenery (and agents) from generated_until to `until` (metres of road)."""
        rng = self.rng
        while self.generated_until < until:
            z = self.generated_until
            for side in (-1, 1):
                kind = rng.random()
                edge = ROAD_HALF_WIDTH + SIDEWALK_WIDTH
                length = rng.uniform(8, 22)
                if kind < 0.62:
                    setback = rng.uniform(0.5, 4.0)
                    depth = rng.uniform(8, 14)
                    height = rng.uniform(7, 22)
                    x_near = edge + setback
                    x0, x1 = (x_near, x_near + depth) if side > 0 else (-x_near - depth, -x_near)
                    self.boxes.append(Box(x0, x1, 0, height, z, z + length, BUILDING, BUILDING,
                                          self._color((150, 140, 125), 45), 'facade',
                                          seed=int(rng.integers(1 << 20))))
                elif kind < 0.85:
                    x_near = edge + rng.uniform(0.5, 3.0)
                    x0, x1 = (x_near, x_near + 3) if side > 0 else (-x_near - 3, -x_near)
                    self.boxes.append(Box(x0, x1, 0, rng.uniform(1.0, 2.5), z, z + length,
                                          VEGETATION, VEGETATION, self._color((70, 110, 40), 20),
                                          'crown', seed=int(rng.integers(1 << 20))))
                else:
                    x_near = edge + 0.2
                    x0, x1 = (x_near, x_near + 0.15) if side > 0 else (-x_near - 0.15, -x_near)
                    self.boxes.append(Box(x0, x1, 0, 1.2, z, z + length, FENCE, FENCE,
                                          self._color((160, 150, 140), 15)))
                if rng.random() < 0.5:  # roadside pole with a sign or a traffic light
                    zp = z + rng.uniform(0, length)
                    xp = side * (ROAD_HALF_WIDTH + 0.5)
                    self.boxes.append(Box(xp - 0.08, xp + 0.08, 0, 3.6, zp, zp + 0.16, POLE,
                                          POLE, (120, 120, 125)))
                    if rng.random() < 0.6:
                        self.boxes.append(Box(xp - 0.35, xp + 0.35, 2.6, 3.3, zp - 0.02, zp,
                                              TRAFFIC_SIGN, TRAFFIC_SIGN,
                                              [(200, 30, 30), (30, 60, 190), (230, 200, 20)]
                                              [int(rng.integers(3))], 'sign'))
                    else:
                        self.boxes.append(Box(xp - 0.18, xp + 0.18, 2.5, 3.4, zp - 0.3, zp,
                                              TRAFFIC_LIGHT, TRAFFIC_LIGHT, (40, 40, 40), 'light'))
                if rng.random() < 0.45:  # a tree at the kerb
                    zt = z + rng.uniform(0, length)
                    xt = side * (ROAD_HALF_WIDTH + SIDEWALK_WIDTH - 0.6)
                    self.boxes.append(Box(xt - 0.15, xt + 0.15, 0, 2.6, zt, zt + 0.3,
                                          VEGETATION, VEGETATION, (90, 70, 45)))
                    r = rng.uniform(1.2, 2.2)
                    self.boxes.append(Box(xt - r, xt + r, 2.2, 2.2 + 2 * r, zt - r, zt + r,
                                          VEGETATION, VEGETATION, self._color((60, 120, 45), 20),
                                          'crown', seed=int(rng.integers(1 << 20))))
                if rng.random() < 0.5:  # a pedestrian on the sidewalk
                    zp = z + rng.uniform(0, length)
                    xp = side * (ROAD_HALF_WIDTH + rng.uniform(0.5, SIDEWALK_WIDTH - 0.5))
                    crossing = rng.random() < 0.15
                    self.boxes.append(Box(xp - 0.28, xp + 0.28, 0, rng.uniform(1.55, 1.9),
                                          zp, zp + 0.35, PERSON, self._instance(PERSON),
                                          self._color((90, 60, 60), 60), 'person',
                                          vx=(-side * 1.2 if crossing else 0.0),
                                          vz=(0.0 if crossing else rng.choice([-1.3, 1.3])),
                                          seed=int(rng.integers(1 << 20))))
            if self.rng.random() < 0.6:  # traffic
                lane = self.rng.choice([-1, 1], p=[0.4, 0.6])
                xc = lane * ROAD_HALF_WIDTH / 2 + rng.uniform(-0.3, 0.3)
                big = rng.random() < 0.15
                w, h, length = (2.5, 3.2, 10.0) if big else (1.8, 1.5, 4.3)
                label = (BUS if rng.random() < 0.5 else TRUCK) if big else CAR
                vz = self.speed * rng.uniform(0.5, 1.2) if lane > 0 else -rng.uniform(6, 12)
                zc = z + rng.uniform(0, 20)
                self.boxes.append(Box(xc - w / 2, xc + w / 2, 0, h, zc, zc + length, label,
                                      self._instance(label),
                                      self._color([(170, 30, 30), (30, 60, 150), (200, 200, 205),
                                                   (40, 40, 45), (90, 120, 80)]
                                                  [int(rng.integers(5))], 20),
                                      'car', vz=vz, seed=int(rng.integers(1 << 20))))
            if rng.random() < 0.3:  # a parked car at the kerb
                side = rng.choice([-1, 1])
                xc = side * (ROAD_HALF_WIDTH - 1.0)
                zc = z + rng.uniform(0, 20)
                self.boxes.append(Box(xc - 0.9, xc + 0.9, 0, 1.45, zc, zc + 4.2, CAR,
                                      self._instance(CAR), self._color((110, 110, 120), 70),
                                      'car', seed=int(rng.integers(1 << 20))))
            self.generated_until += 20.0

    def step(self, dt: float, camera_z: float) -> None:
        for box in self.boxes:
            box.moved(dt)
        self.boxes = [b for b in self.boxes if b.z1 > camera_z + 0.5 or b.vz > 0]
        self.boxes = [b for b in self.boxes if b.z0 < camera_z + 4 * VIEW_DISTANCE]
        self.extend(camera_z + VIEW_DISTANCE + 20)


class Renderer:
    """Ray-casting renderer for the street: ground, sky, and boxes back to front."""

    def __init__(self, camera: Camera, seed: int):
        self.cam = camera
        self.seed = seed
        v, u = np.mgrid[0:camera.height, 0:camera.width].astype(np.float32)
        self.u, self.v = u, v
        self.ray_x = (u - camera.cx) / camera.focal     # direction per unit depth
        self.ray_y = (camera.cy - v) / camera.focal

    def render(self, street: Street, camera_x: float, camera_z: float) -> Frame:
        cam = self.cam
        h, w = cam.height, cam.width
        image = np.zeros((h, w, 3), np.float32)
        labels = np.full((h, w), SKY, np.uint8)
        instances = np.full((h, w), SKY, np.int32)
        depth = np.full((h, w), 2 * VIEW_DISTANCE, np.float32)
        self._sky(image)
        self._ground(image, labels, instances, depth, camera_x, camera_z)
        visible = [b for b in street.boxes if b.z1 > camera_z + 0.3
                   and b.z0 < camera_z + VIEW_DISTANCE]
        visible.sort(key=lambda b: -max(b.z0 - camera_z, 0.3))
        for box in visible:
            self._box(box, image, labels, instances, depth, camera_x, camera_z)
        return Frame(np.clip(image, 0, 255).astype(np.uint8), labels, instances, depth)

    def _sky(self, image):
        t = np.clip(self.v / max(self.cam.cy, 1), 0, 1)[..., None]
        top, bottom = np.array([70, 120, 190], np.float32), np.array([170, 195, 225], np.float32)
        image[:] = top * (1 - t) + bottom * t
        clouds = _hash_noise((self.u // 24).astype(np.int64), (self.v // 10).astype(np.int64),
                             self.seed)
        image += (clouds[..., None] > 0.8) * 25.0

    def _ground(self, image, labels, instances, depth, camera_x, camera_z):
        below = self.ray_y < -1e-4
        z = np.where(below, CAMERA_HEIGHT / np.maximum(-self.ray_y, 1e-4), 0)
        x = camera_x + self.ray_x * z
        zw = camera_z + z
        within = below & (z < VIEW_DISTANCE * 1.5)
        ax = np.abs(x)
        road = within & (ax <= ROAD_HALF_WIDTH)
        walk = within & (ax > ROAD_HALF_WIDTH) & (ax <= ROAD_HALF_WIDTH + SIDEWALK_WIDTH)
        terrain = within & ~road & ~walk
        cell = _hash_noise(np.floor(x * 4).astype(np.int64), np.floor(zw * 4).astype(np.int64),
                           self.seed)
        image[road] = (np.array([85, 85, 90]) + 30 * cell[road, None])
        marking = road & (((np.abs(x) < 0.12) & ((zw % 9.0) < 3.0))
                          | (np.abs(ax - (ROAD_HALF_WIDTH - 0.2)) < 0.1))
        image[marking] = (225, 225, 215)
        slabs = ((np.floor(x / 1.2) + np.floor(zw / 1.2)) % 2)
        image[walk] = (np.array([165, 150, 150]) + 18 * slabs[walk, None] + 15 * cell[walk, None])
        image[terrain] = (np.array([105, 140, 70]) + 40 * cell[terrain, None])
        labels[road], labels[walk], labels[terrain] = ROAD, SIDEWALK, TERRAIN
        instances[road], instances[walk], instances[terrain] = ROAD, SIDEWALK, TERRAIN
        depth[within] = z[within]

    def _face(self, box, axis, value, camera_x, camera_z):
        """Pixels of the box face on plane `axis` = value, their depth and face coordinates."""
        if axis == 'x':
            dx = value - camera_x
            with np.errstate(divide='ignore', invalid='ignore'):
                z = dx / self.ray_x
            zw = camera_z + z
            y = CAMERA_HEIGHT + self.ray_y * z
            inside = (z > 0.3) & (zw >= box.z0) & (zw <= box.z1) & (y >= box.y0) & (y <= box.y1)
            return inside, z, zw, y
        z = value - camera_z
        if z <= 0.3:
            return None
        x = camera_x + self.ray_x * z
        y = CAMERA_HEIGHT + self.ray_y * z
        inside = (x >= box.x0) & (x <= box.x1) & (y >= box.y0) & (y <= box.y1)
        return inside, np.full_like(x, z), x, y

    def _box(self, box, image, labels, instances, depth, camera_x, camera_z):
        faces = [self._face(box, 'z', box.z0 if box.z0 > camera_z + 0.3 else box.z1,
                            camera_x, camera_z)]
        if box.x0 > camera_x:
            faces.append(self._face(box, 'x', box.x0, camera_x, camera_z))
        elif box.x1 < camera_x:
            faces.append(self._face(box, 'x', box.x1, camera_x, camera_z))
        for index, face in enumerate(faces):
            if face is None:
                continue
            inside, z, a, y = face
            if not inside.any():
                continue
            color = self._texture(box, a, y, inside, side=index > 0)
            shade = 0.8 if index > 0 else 1.0
            image[inside] = color * shade
            labels[inside] = box.label
            instances[inside] = box.instance
            depth[inside] = z[inside]

    def _texture(self, box, a, y, inside, side):
        """Per-pixel colour of a face: a (along-face coordinate), y (height)."""
        base = np.array(box.color, np.float32)
        a_in, y_in = a[inside], y[inside]
        if box.style == 'facade':
            window = ((a_in % 3.0) > 1.0) & ((y_in % 3.2) > 1.2) & (y_in > 1.0)
            noise = _hash_noise(np.floor(a_in * 2).astype(np.int64),
                                np.floor(y_in * 2).astype(np.int64), box.seed)
            col = base[None] * (0.85 + 0.3 * noise[:, None])
            col[window] = np.array([60, 75, 95]) + 50 * noise[window, None]
            return col
        if box.style == 'car':
            rel = (y_in - box.y0) / max(box.y1 - box.y0, 1e-3)
            col = np.repeat(base[None], a_in.size, axis=0)
            col[(rel > 0.55) & (rel < 0.9)] = (45, 55, 70)          # windows
            col[rel < 0.2] = (25, 25, 25)                           # wheels / bumper
            return col
        if box.style == 'person':
            rel = (y_in - box.y0) / max(box.y1 - box.y0, 1e-3)
            col = np.repeat(base[None], a_in.size, axis=0)
            col[rel > 0.86] = (215, 170, 140)                       # head
            col[rel < 0.45] = (40, 40, 60)                          # legs
            return col
        if box.style == 'crown':
            noise = _hash_noise(np.floor(a_in * 3).astype(np.int64),
                                np.floor(y_in * 3).astype(np.int64), box.seed)
            return base[None] * (0.7 + 0.6 * noise[:, None])
        if box.style == 'sign':
            return np.repeat(base[None], a_in.size, axis=0)
        if box.style == 'light':
            rel = (y_in - box.y0) / max(box.y1 - box.y0, 1e-3)
            col = np.repeat(base[None], a_in.size, axis=0)
            col[(rel > 0.66)] = (220, 40, 30)
            col[(rel > 0.33) & (rel <= 0.66)] = (230, 180, 30)
            return col
        return np.repeat(base[None], a_in.size, axis=0)
